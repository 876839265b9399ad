"""The plot of ``python -m bench``: ``bench/results/results.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.5))
    pairs = results["throughput"]["pairs"]
    xs = range(1, len(pairs) + 1)
    a.plot(xs, [p["ours"]["rps"] for p in pairs], "o-", label="sessionsvc")
    a.plot(xs, [p["baseline"]["rps"] for p in pairs], "s--", label="baseline (jti GET)")
    title = f"Authenticated GET, req/s (ours / baseline {results['throughput']['median_ratio']}"
    if "nocheck_pairs" in results["throughput"]:
        nocheck = results["throughput"]["nocheck_pairs"]
        a.plot(xs, [p["nocheck"]["rps"] for p in nocheck], "^:", label="no check (limit)")
        title += f", / no check {results['throughput']['nocheck_median_ratio']}"
    a.set_title(title + ")", fontsize=9)
    a.set_xlabel("alternating pair")
    a.set_ylim(bottom=0)
    a.legend()
    listing = results["growth"]["list_median_us_by_k"]
    b.plot([int(k) for k in listing], list(listing.values()), "o-")
    b.set_xscale("log")
    b.set_title("List my sessions: median µs (one round trip)")
    b.set_xlabel("sessions of the user (K)")
    b.set_ylim(bottom=0)
    growth = results["growth"]
    labels = [f"{growth['small']['sessions_stored']:,}", f"{growth['large']['sessions_stored']:,}"]
    width = 0.35
    c.bar(
        [0 - width / 2, 1 - width / 2],
        [growth["small"]["check_median_us"], growth["large"]["check_median_us"]],
        width,
        label="check (in process)",
    )
    c.bar(
        [0 + width / 2, 1 + width / 2],
        [growth["small"]["http_p50_us"], growth["large"]["http_p50_us"]],
        width,
        label="HTTP p50 (wrk)",
    )
    c.set_xticks([0, 1], labels)
    c.set_title("Revocation check vs sessions stored (µs)")
    c.legend(loc="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
