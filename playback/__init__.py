"""From a received latent to the shown frame: concealment policies (conceal, shared by the receiver and
evaluate.py) and the receiver's outputs (output: PNG/MP4 writer, scores, summaries)."""
