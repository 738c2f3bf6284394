"""Draws ``assets/score_components.png``: what ZCore scores are made of, on the demo images.

Real textile JPGs (``conformal-clip-data``, the ``make demo`` images; a fixed subset across the
three classes) -> EfficientNet-Lite0 embeddings (bundled ImageNet weights, offline) ->
``compute_zcore(..., component_fields=True)`` -> a scatter of each image's coverage against its
redundancy penalty, coloured by score, with the top 20% (the coreset) outlined.

Usage (in a throw-away FiftyOne database)::

    FIFTYONE_DATABASE_DIR=$(mktemp -d) python docs/make_score_components.py [--max-samples N]
"""

import argparse
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-samples", type=int, default=600)
    parser.add_argument("--seed", type=int, default=51)
    parser.add_argument("--out", default=os.path.join(ROOT, "assets", "score_components.png"))
    args = parser.parse_args(argv)
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")

    import conformal_clip_data
    import fiftyone as fo
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    import zcore
    from zcore.models import load_model

    root = conformal_clip_data.textile_simulated_root()
    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    paths = sorted(random.Random(0).sample(paths, min(args.max_samples, len(paths))))
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=p) for p in paths])
    try:
        zcore.compute_zcore(
            ds,
            model=load_model("efficientnet-lite0"),
            embeddings="effnet",
            seed=args.seed,
            component_fields=True,
        )
        cov = np.array(ds.values("zcore_score_coverage"))
        red = np.array(ds.values("zcore_score_redundancy"))
        score = np.array(ds.values("zcore_score"))
        keep = set(zcore.select_coreset(ds, fraction=0.2).values("id"))
        kept = np.array([i in keep for i in ds.values("id")])
        n_points = ds.get_run_info("zcore_score").config.n_samples
    finally:
        ds.delete()

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    sc = ax.scatter(red, cov, c=score, cmap="viridis", s=14, alpha=0.85, linewidths=0)
    ax.scatter(
        red[kept],
        cov[kept],
        s=40,
        facecolors="none",
        edgecolors="#ff6d04",
        linewidths=0.9,
        label="kept (top 20%)",
    )
    fig.colorbar(sc, ax=ax, label="zcore_score")
    ax.set_xlabel("zcore_score_redundancy (total penalty)")
    ax.set_ylabel("zcore_score_coverage (times nearest to a point)")
    ax.set_title(
        f"What a ZCore score is made of: {len(cov)} textile images, EfficientNet-Lite0,\n"
        f"{n_points:,} sampling points; score = normalised(coverage - redundancy + U(0,1))",
        fontsize=9,
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
