"""Cost-aware batch jobs over JSONL files: cheapest fitting candidate per row, a hard budget, resumable.

Example::

    from router.batch import load_batch_config, run_batch
    result = run_batch("requests.jsonl", "results.jsonl", load_batch_config("configs/batch.yaml"), budget_usd=5)
    print(result.reason, result.spent_usd, result.ok, result.failed)

The same from the shell: ``polyroute batch run requests.jsonl --config configs/batch.yaml
--output results.jsonl --budget-usd 5`` (``--dry-run``, ``--resume``, ``--retry-failed``).
"""

from __future__ import annotations

from .config import BatchConfig, Candidate, load_batch_config, parse_batch_config
from .runner import EXIT_BUDGET, EXIT_DONE, EXIT_FAILED_ROWS, EXIT_INTERRUPTED, BatchResult, arun_batch, run_batch

__all__ = [
    "EXIT_BUDGET",
    "EXIT_DONE",
    "EXIT_FAILED_ROWS",
    "EXIT_INTERRUPTED",
    "BatchConfig",
    "BatchResult",
    "Candidate",
    "arun_batch",
    "load_batch_config",
    "parse_batch_config",
    "run_batch",
]
