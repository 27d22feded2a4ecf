"""Phase 06, the service and Synapse OS: the llama-server unit and its checks, the model gate,
hardening, the read-only root, the image that boots into the service, and its distributable form."""
