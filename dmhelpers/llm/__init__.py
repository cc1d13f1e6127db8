"""Chat models for the tutorial's LLM steps: one way to reach OpenAI, any OpenAI-compatible server or the bundled
local model (:mod:`.endpoint`), the local llama.cpp server itself (:mod:`.local_server`), and bounded concurrency
(:mod:`.concurrency`)."""
from dmhelpers.llm.concurrency import DEFAULT_CONCURRENCY, check_concurrency, map_bounded, run_sync
from dmhelpers.llm.endpoint import LOCAL, Endpoint, chat_endpoint, is_local, model_label
from dmhelpers.llm.local_server import MODEL_NAME, LocalLLM, local_llm

__all__ = ["DEFAULT_CONCURRENCY", "LOCAL", "MODEL_NAME", "Endpoint", "LocalLLM", "chat_endpoint", "check_concurrency",
           "is_local", "local_llm", "map_bounded", "model_label", "run_sync"]
