"""The data engine: best-of-K sampling under a verifier, quality filtering, exports for trainers,
and the flywheel that tracks the verifier's pass rate round after round.

Everything here is light to import; training and plotting load their packages when called.

>>> from agentgym.data import filter_quality
>>> filter_quality([{"messages": [], "env": "e", "task_id": "t", "score": 1.0, "status": "ok"}], 1.0, dedup=True)[0]["score"]
1.0
"""

from agentgym.data.export import FORMATS, export_file, export_records, preference_pairs
from agentgym.data.filter import FilterReport, filter_file, filter_quality
from agentgym.data.report import odds_multiplier
from agentgym.data.sample import SampleStats, generate_samples, sample_stats

__all__ = [
    "FORMATS",
    "FilterReport",
    "SampleStats",
    "export_file",
    "export_records",
    "filter_file",
    "filter_quality",
    "generate_samples",
    "odds_multiplier",
    "preference_pairs",
    "sample_stats",
]
