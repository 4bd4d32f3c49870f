"""Tokens for training and evaluation: shards, tokenizers, the token cache, batches."""
