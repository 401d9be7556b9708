"""Ours against classic codecs on the same frames and packet draws: the method registry (methods), JPEG/WebP
(baselines), H.264 (+FEC) (h264), packets and the freeze player (packets), the run (runner), RD curves and
BD-rates (rd), frame/temporal model evaluation (frame_eval, temporal) and the report (report)."""
