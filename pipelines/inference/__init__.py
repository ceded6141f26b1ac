"""Inference: audio + portrait -> landmarks -> video, one job or a Ray batch."""
