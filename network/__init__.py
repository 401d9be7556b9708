"""What happens between sender and receiver: loss models (loss/, the one place that decides what arrived),
sockets (transport) and per-frame reassembly with deadlines (reassembly). Imports neither models nor data."""
