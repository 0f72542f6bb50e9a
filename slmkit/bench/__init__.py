"""Measuring what a model costs on this machine: hardware ceilings, latency and memory."""
