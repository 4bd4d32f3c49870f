"""Benchmarks behind ``evotui bench ...``; each returns a JSON-able dict."""
