"""Cost-aware batch jobs over JSONL files: cheapest fitting candidate per row, a hard budget, resumable.

Example::

    from router.batch import load_batch_config, run_batch
    result = run_batch("requests.jsonl", "results.jsonl", load_batch_config("configs/batch.yaml"), budget_usd=5)
    print(result.reason, result.spent_usd, result.ok, result.failed)

The same from the shell: ``polyroute batch run requests.jsonl --config configs/batch.yaml
--output results.jsonl --budget-usd 5`` (``--dry-run``, ``--resume``, ``--retry-failed``).

On Ray Data workers, with the budget in Redis (``pip install 'polyroute[ray]'``; ``--engine ray``)::

    from router.batch import run_batch_ray
    result = run_batch_ray("requests.jsonl", "results.jsonl", load_batch_config("configs/batch.yaml"),
                           budget_usd=5, redis_url="redis://127.0.0.1:6379/0", ray_address="auto")
"""

from __future__ import annotations

from .config import BatchConfig, Candidate, load_batch_config, parse_batch_config
from .job import EXIT_BUDGET, EXIT_DONE, EXIT_FAILED_ROWS, EXIT_INTERRUPTED, BatchResult
from .ray_engine import RayBatchResult, arun_batch_ray, run_batch_ray
from .runner import arun_batch, run_batch

__all__ = [
    "EXIT_BUDGET",
    "EXIT_DONE",
    "EXIT_FAILED_ROWS",
    "EXIT_INTERRUPTED",
    "BatchConfig",
    "BatchResult",
    "Candidate",
    "RayBatchResult",
    "arun_batch",
    "arun_batch_ray",
    "load_batch_config",
    "parse_batch_config",
    "run_batch",
    "run_batch_ray",
]
