"""Serving many data owners' adapters from one shared base model per served model (issue 30).

- `routed`: the served copy of a base model, whose block leaves route each batch row through its own
  adapter's tensors (full-block overrides or unmerged LoRA); the middle blocks run once per batch.
- `adapters`: an adapter's tensors on the serving device, and the pool that loads them on first use and
  evicts them by a memory budget (`SCALEOT_SERVE_MAX_ADAPTER_MB`).
- `engine`: prefill and decode steps of a mixed batch with a KV cache (left padding, per-row positions).
- `scheduler`: one thread per served model running continuous batching over a bounded queue.
- `registry`: what the API process holds: served models, the pool, the schedulers.
"""
