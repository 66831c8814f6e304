"""Cache outputs -> per-pixel scorer inputs, one frame at a time.

:mod:`analyze.compose.queries` composes a query cache's class scores ``s`` (EoMT's windows),
:mod:`analyze.compose.resize` resizes pixel logits and score maps (torch's bilinear), and
:mod:`analyze.compose.frame_scores` reads a frame and scores it for every (scorer, T) in fused
row tiles: the one path from a cache to maps (:mod:`analyze.compose.partial`: what it composes
for a pass that reads a few pixels). Imports scorers and schemas, never the run,
report or command-line code.
"""
