"""Streaming trainers for Audio2Lmk and Lmk2Video (read the build's WebDataset shards)."""
