"""The bitstream: latent quantisation (quant), entropy coding (entropy), the packet format (wire) and
latent <-> packets (packetize). Imports neither models nor data: a codec is built from a model object."""
