"""The measurement engine every benchmark shares: one llama-bench invocation with the load
around it, configurations interleaved in rounds, statistics over rounds, the llama-server client."""
