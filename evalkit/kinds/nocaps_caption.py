"""NoCaps captioning: the caption kind's metrics overall, plus CIDEr and SPICE per domain (in/near/out).

Each domain is scored as its own corpus (its own CIDEr document frequencies), as the nocaps evaluation scores
the in-, near- and out-domain subsets; "overall" is the whole validation set as one corpus. The domain of each
image comes from its sample meta (the official nocaps_val_4500_captions.json, passed with
``--column domain_file=FILE``, because the hub parquet has no domain column). Without domains only the overall
metrics are reported.
"""

from __future__ import annotations

from evalkit.core.scores import ScoreResult
from evalkit.core.task_kind import RunJob, RunOutput
from evalkit.kinds.caption import CaptionKind

DOMAIN_METRICS = ("CIDEr", "SPICE")


class NocapsCaptionKind(CaptionKind):
    """Caption metrics overall and ``CIDEr/<domain>``, ``SPICE/<domain>`` per NoCaps domain."""

    name = "nocaps-caption"
    headline_metrics = ("CIDEr", "SPICE")
    report_order = 0
    breakdown_label = "domain"

    def score(self, job: RunJob, output: RunOutput) -> ScoreResult:
        """The caption kind's corpus scores, then each domain's subset scored as its own corpus."""
        from evalkit.metrics.caption_metrics import score_captions

        result = super().score(job, output)
        by_domain: dict[str, list] = {}
        for sample in job.sample_set.samples:
            domain = dict(sample.meta).get("domain")
            if domain:
                by_domain.setdefault(str(domain), []).append(sample)
        metrics, details = dict(result.metrics), dict(result.details or {})
        for domain, samples in sorted(by_domain.items()):
            scores = score_captions({s.id: list(s.references) for s in samples},
                                    {s.id: output.predictions[s.id].prediction for s in samples})
            for name in DOMAIN_METRICS:
                if name in scores.corpus:
                    metrics[f"{name}/{domain}"] = scores.corpus[name]
        details["domains"] = {d: len(s) for d, s in sorted(by_domain.items())} or "not labelled (pass --column "\
                             "domain_file=nocaps_val_4500_captions.json)"
        return ScoreResult(metrics, result.per_sample, result.headline, details, result.scale, result.std_errors)

    def breakdown(self, record: dict) -> dict[str, float] | None:
        """CIDEr overall and per domain."""
        metrics = {k: (v.get("value") if isinstance(v, dict) else v) for k, v in (record.get("metrics") or {}).items()}
        rows = {k.split("/", 1)[1]: float(v) for k, v in metrics.items() if k.startswith("CIDEr/") and v is not None}
        if metrics.get("CIDEr") is not None:
            rows = {"overall": float(metrics["CIDEr"]), **rows}
        return rows or None


NOCAPS_CAPTION = NocapsCaptionKind()
