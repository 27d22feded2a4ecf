"""Phase 04, the AI runtime: llama.cpp builds and their verification, the compiler's view of the
CPU, models (real and SYNTHETIC) and quantisation."""
