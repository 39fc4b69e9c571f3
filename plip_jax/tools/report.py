"""Pictures of a run: `python -m plip_jax.report --workdir DIR [--split test] [--examples 6]`.

Writes DIR/report/ with
  losses.png        loss curves per pretext task (total, IVLC, TIC, IAP), learning rate, eval R@1
  retrieval.png     text->image examples: query text, top-5 gallery images, true matches framed green
  colorization.png  TIC: gray input, the predicted colours, the target (colour image)
  attributes.html   IAP: masked caption, predicted words, truth (also a table in index.html)
  summary.png       one page with all of the above (for READMEs)
  report.json       the numbers behind the pictures
  index.html        everything together, with eval.json's metrics
Examples come from the run's own dataset split (held-out identities), or synthetic batches when the
run trained on synthetic data. Sections whose head the run did not train are left out with a note.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from plip_jax.data.transforms import MEAN, STD
from plip_jax.tools.drawing import save_figure

if TYPE_CHECKING:
    from plip_jax.api import TrainingRun

LOSS_KEYS = (("loss", "total (weighted)"), ("loss_ivlc", "IVLC (CMPM)"), ("loss_tic", "TIC (colorization)"),
             ("loss_iap", "IAP (attribute prediction)"))
TEMPLATE = "report.html"  # plip_jax/tools/templates/: index.html and attributes.html


class ReportError(RuntimeError):
    """A workdir that cannot be reported on (one clear line)."""


# --------------------------------------------------------------------------------------------
# Metrics and loss curves
# --------------------------------------------------------------------------------------------
def read_metrics(path: str | os.PathLike) -> tuple[dict[str, list[tuple[int, float]]], int]:
    """metrics.jsonl -> ({key: [(step, value), ...] sorted by step}, number of bad lines).

    A step logged twice (a resumed run) keeps its last value; non-numeric values are ignored.
    """
    rows: dict[str, dict[int, float]] = {}
    bad = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                step = int(rec["step"])
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    rows.setdefault(k, {})[step] = float(v)
    return {k: sorted(v.items()) for k, v in rows.items()}, bad


def _smooth(y: np.ndarray) -> np.ndarray:
    """Exponential moving average over ~len/20 points."""
    alpha = 1.0 / max(2.0, len(y) / 20.0)
    out = np.empty_like(y)
    acc = y[0]
    for i, v in enumerate(y):
        acc = alpha * v + (1 - alpha) * acc
        out[i] = acc
    return out


def plot_losses(series: dict[str, list[tuple[int, float]]], out: str | os.PathLike, dpi: int = 80) -> Path:
    """One panel per pretext-task loss present, plus learning rate and eval R@1 when logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, list[str]]] = [(title, [k]) for k, title in LOSS_KEYS if series.get(k)]
    if not panels:
        raise ReportError("metrics.jsonl has no loss values to plot")
    if series.get("lr"):
        panels.append(("learning rate", ["lr"]))
    r1 = sorted(k for k in series if k.endswith("/R1"))
    if r1:
        panels.append(("text->image R@1 (%)", r1))
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.0 * cols, 2.8 * nrows), dpi=dpi, squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.set_axis_off()
    for ax, (title, keys) in zip(axes.ravel(), panels):
        for k in keys:
            steps = np.asarray([s for s, _ in series[k]])
            vals = np.asarray([v for _, v in series[k]])
            if "/" in k:
                ax.plot(steps, vals, "o-", ms=4, label=k.split("/")[0])
            else:
                long = len(vals) >= 40
                ax.plot(steps, vals, color="C0", alpha=0.35 if long else 1.0, lw=1)
                if long:
                    ax.plot(steps, _smooth(vals), color="C0", lw=1.8)
        if "/" in keys[0]:
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    save_figure(fig, out, dpi)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _unnormalize(x: np.ndarray) -> np.ndarray:
    """Normalised float image (H, W, 3) -> float RGB in [0, 1] for display."""
    return np.clip(np.asarray(x, np.float32) * np.asarray(STD) + np.asarray(MEAN), 0.0, 1.0)


def _join_tokens(tokens: Sequence[str]) -> str:
    """Word pieces -> text ('red', '##dish' -> 'reddish')."""
    out = ""
    for t in tokens:
        out += t[2:] if t.startswith("##") else (" " + t if out else t)
    return out


# --------------------------------------------------------------------------------------------
# Example data
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Examples:
    """Held-out examples: eval gallery/queries for retrieval and a training-spec batch for the heads."""
    images: np.ndarray          # (N, H, W, 3) gallery
    image_ids: np.ndarray
    captions: list[str]
    input_ids: np.ndarray
    attention_mask: np.ndarray
    caption_ids: np.ndarray
    batch: dict[str, np.ndarray]  # training spec, one caption per example, for TIC / IAP
    source: str


def _masked_caption(run: TrainingRun, ex: dict, ratio: float, rng: np.random.Generator) -> tuple[dict, tuple]:
    """Tokenize a caption of `ex` and mask its attribute phrases as in training (probability `ratio`);
    when nothing gets masked, every phrase that fits is masked, trying each caption in turn."""
    from plip_jax.data import masking
    from plip_jax.data.pipeline import captions_with_spans

    d, tok = run.config.data, run.model.tokenizer
    first = None
    for slot, (caption, spans) in enumerate(captions_with_spans(ex)):
        enc = tok.encode_with_offsets([caption], max_length=int(d.max_length))
        for r in ((ratio, 1.0) if slot == 0 else (1.0,)):
            out = masking.mask_phrases(enc["input_ids"][0], enc["offsets"][0], spans, r, rng,
                                       tok.mask_token_id, int(d.max_masked))
            first = first or (enc, out)
            if out[3].any():
                return enc, out
    if first is None:
        raise ReportError(f"an example of the split has no caption: {ex.get('file_path', '?')!r}")
    return first


def load_examples(run: TrainingRun, split: str, num_examples: int, max_items: int = 1000,
                  seed: int = 0) -> Examples:
    """Gallery + captions of `split`, and a head batch of `num_examples` examples of distinct identities."""
    from plip_jax.data import sources, synthetic
    from plip_jax.data.pipeline import load_eval_split

    c, tok = run.config, run.model.tokenizer
    size = tuple(int(v) for v in c.model.image.input_size)
    d = c.data
    vocab = run.module.text_config.vocab_size
    if d.name == "synthetic":
        ev = sources.open_eval(c, tok, split)
        ids = np.minimum(ev["input_ids"], vocab - 1)
        captions = [tok.decode(r) for r in ids]
        b = synthetic.synthetic_batch(num_examples, size, int(d.max_length), int(d.max_masked),
                                      vocab_size=max(vocab, 1001), num_ids=num_examples, seed=seed + 7)
        for k in ("input_ids", "masked_input_ids", "mlm_labels"):
            b[k] = np.minimum(b[k], vocab - 1)
        return Examples(ev["images"], ev["image_ids"], captions, ids, ev["attention_mask"],
                        ev["caption_ids"], b, f"synthetic ({split})")

    source = sources.open_source(d, split)
    ev = load_eval_split(source, tok, size, max_items=max_items, max_length=int(d.max_length))
    first: dict[int, int] = {}  # one example per identity, spread over the split
    for i, pid in enumerate(ev["image_ids"]):
        first.setdefault(int(pid), i)
    picks = list(first.values())
    picks = [picks[int(j)] for j in np.linspace(0, len(picks) - 1, min(num_examples, len(picks)))]
    rng = np.random.default_rng(seed)
    ratio = float(d.get("mask_upper", 0.8))
    rows: dict[str, list] = {k: [] for k in synthetic.BATCH_KEYS}
    for i in picks:
        enc, (masked, positions, labels, weights) = _masked_caption(run, source[int(i)], ratio, rng)
        for k, v in (("image", ev["images"][i]), ("input_ids", enc["input_ids"][0]),
                     ("attention_mask", enc["attention_mask"][0]), ("masked_input_ids", masked),
                     ("mlm_positions", positions), ("mlm_labels", labels), ("mlm_weights", weights),
                     ("id", np.int32(ev["image_ids"][i]))):
            rows[k].append(v)
    batch = {k: np.stack(v) for k, v in rows.items()}
    return Examples(ev["images"], ev["image_ids"], list(ev["captions"]), ev["input_ids"],
                    ev["attention_mask"], ev["caption_ids"], batch, f"{d.name}/{d.config} {split}")


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
def retrieval_section(run: TrainingRun, ex: Examples, out: Path, num_queries: int, k: int = 5) -> list[dict]:
    """Embed gallery and captions, rank, draw `num_queries` queries (distinct identities) with top-k.

    Returns one record per drawn query, then a last record with R@1 over all captions of the split.
    """
    from plip_jax.evals.ranking import similarity_topk
    from plip_jax.tools.drawing import Tile, draw_rows

    emb = run.model.embedder(batch_size=int(run.config.train.get("eval_batch_size", 64)))
    gal = emb.images(run.model.variables, ex.images)
    all_txt = emb.texts(run.model.variables, ex.input_ids, ex.attention_mask)
    first: dict[int, int] = {}
    for i, pid in enumerate(ex.caption_ids):
        first.setdefault(int(pid), i)
    qs = list(first.values())
    qs = [qs[int(j)] for j in np.linspace(0, len(qs) - 1, min(num_queries, len(qs)))]
    k = min(k, len(gal))
    idx, scores = similarity_topk(all_txt[qs], gal, k)
    top1 = similarity_topk(all_txt, gal, 1)[0][:, 0]
    r1 = float(np.mean(ex.image_ids[top1] == ex.caption_ids) * 100)
    rows, records = [], []
    for qi, q in enumerate(qs):
        truth = int(ex.caption_ids[q])
        matches = [bool(ex.image_ids[g] == truth) for g in idx[qi]]
        first_true = next((r + 1 for r, m in enumerate(matches) if m), None)
        tiles = [Tile(ex.images[g], f"#{r + 1}  {scores[qi, r]:.3f}", f"id {int(ex.image_ids[g])}", matches[r])
                 for r, g in enumerate(idx[qi])]
        note = f"first true match at rank {first_true}" if first_true else f"no true match in the top {k}"
        rows.append((f'"{ex.captions[q]}"  (id {truth}; {note})', tiles))
        records.append({"query": ex.captions[q], "id": truth, "top": [int(ex.image_ids[g]) for g in idx[qi]],
                        "scores": [float(s) for s in scores[qi]], "first_true_rank": first_true})
    draw_rows(rows, out)
    return records + [{"R1_all_captions": r1, "num_captions": int(len(top1)), "num_gallery": int(len(gal))}]


def heads_outputs(run: TrainingRun, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The pre-training forward (eval mode) on one batch: colour_pred, target, iap_logits, ..."""
    import jax

    fn = jax.jit(lambda v, b: run.module.apply(v, b, train=False))
    out = fn({k: run.variables[k] for k in ("params", "batch_stats") if k in run.variables}, batch)
    return {k: np.asarray(v) for k, v in jax.device_get(out).items()}


def colorization_section(ex: Examples, outputs: dict[str, np.ndarray], out: Path) -> dict:
    """Rows: gray input, prediction, target; one column per example."""
    import jax.numpy as jnp

    from plip_jax.data.transforms import gray_normalized
    from plip_jax.tools.drawing import Tile, draw_rows

    gray = np.asarray(gray_normalized(jnp.asarray(ex.batch["image"])))
    pred, target = outputs["colour_pred"], outputs["target"]
    if pred.shape[1:3] != target.shape[1:3]:
        raise ReportError(f"colour prediction {pred.shape} and target {target.shape} differ in size")
    mse = [float(np.mean((p - t) ** 2)) for p, t in zip(pred, target)]
    rows = [("gray input", [Tile(_unnormalize(g), f"id {int(i)}") for g, i in zip(gray, ex.batch["id"])]),
            ("prediction", [Tile(_unnormalize(p), f"mse {m:.3f}") for p, m in zip(pred, mse)]),
            ("target", [Tile(_unnormalize(t)) for t in target])]
    draw_rows(rows, out, tile_size=(1.25, 2.4))
    return {"mse": mse, "mean_mse": float(np.mean(mse))}


def attribute_section(run: TrainingRun, ex: Examples, outputs: dict[str, np.ndarray]) -> list[dict]:
    """Per example: the masked caption, the predicted words and the true words at masked positions."""
    tok = run.model.tokenizer
    pred_ids = outputs["iap_logits"].argmax(-1)
    b = ex.batch
    special = {tok.pad_token_id, tok.cls_token_id, tok.sep_token_id}
    rows = []
    for i in range(len(pred_ids)):
        w = b["mlm_weights"][i] > 0
        ids = [t for t in b["masked_input_ids"][i] if int(t) not in special]
        truth, pred = b["mlm_labels"][i][w], pred_ids[i][w]
        rows.append({"id": int(b["id"][i]),
                     "masked_caption": _join_tokens(tok.convert_ids_to_tokens(ids)),
                     "predicted": tok.convert_ids_to_tokens(pred), "truth": tok.convert_ids_to_tokens(truth),
                     "correct": int(np.sum(pred == truth)), "masked": int(w.sum())})
    return rows


def _attributes_text(rows: list[dict], width: int = 95) -> str:
    lines = []
    for r in rows[:4]:
        lines += textwrap.wrap(f"masked: {r['masked_caption']}", width)
        lines.append(f"   predicted: {' '.join(r['predicted'])}   |   truth: {' '.join(r['truth'])}"
                     f"   ({r['correct']}/{r['masked']})")
    return "\n".join(lines)


def summary_figure(parts: dict[str, Path], attr_rows: list[dict] | None, title: str, out: Path,
                   dpi: int = 60) -> Path:
    """One page: loss curves and colorization (left), retrieval (right), attribute predictions (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    imgs = {k: np.asarray(Image.open(p).convert("RGB")) for k, p in parts.items() if p.is_file()}
    fig = plt.figure(figsize=(16, 12), dpi=dpi)
    fig.suptitle(title, fontsize=14)
    gs = fig.add_gridspec(3, 2, height_ratios=[1.0, 1.0, 0.55], width_ratios=[1.35, 1.0])
    slots = {"losses": gs[0, 0], "colorization": gs[1, 0], "retrieval": gs[:, 1]}
    names = {"losses": "loss curves", "colorization": "colorization (TIC): gray input / prediction / target",
             "retrieval": "text->image retrieval (top-5; green = same identity)"}
    for k, slot in slots.items():
        ax = fig.add_subplot(slot)
        ax.set_axis_off()
        if k in imgs:
            ax.imshow(imgs[k])
            ax.set_title(names[k], fontsize=11)
    ax = fig.add_subplot(gs[2, 0])
    ax.set_axis_off()
    if attr_rows:
        ax.set_title("attribute prediction (IAP)", fontsize=11)
        ax.text(0.0, 1.0, _attributes_text(attr_rows), va="top", ha="left", family="monospace",
                fontsize=8, transform=ax.transAxes)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.93, bottom=0.02, wspace=0.05, hspace=0.15)
    save_figure(fig, out, dpi)
    plt.close(fig)
    with Image.open(out) as im:  # a 256-colour palette keeps the page small enough for a README
        small = im.convert("RGB").quantize(256, dither=Image.Dither.NONE)
    small.save(out, optimize=True)
    return out


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------
def render_page(**context: Any) -> str:
    """The report page (templates/report.html) for `context`: title, workdir, examples_from, split,
    eval_rows, retrieval, colorization, attributes, notes; `attributes_only=True` gives the table alone."""
    import jinja2

    from plip_jax.core.metrics import RETRIEVAL_COLUMNS

    env = jinja2.Environment(loader=jinja2.PackageLoader("plip_jax.tools", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    rows = context.get("attributes")
    if rows is not None:  # each predicted word with whether it is the true one
        rows = [dict(r, words=[(p, p == t) for p, t in zip(r["predicted"], r["truth"])]) for r in rows]
    defaults = dict(attributes_only=False, eval_rows=(), colorization=None, notes=(),
                    metric_columns=RETRIEVAL_COLUMNS)
    return env.get_template(TEMPLATE).render({**defaults, **context, "attributes": rows})


def _eval_rows(eval_json: dict | None) -> list[tuple[str, dict]]:
    """eval.json -> [(split, metrics)]: its validation metrics first when it has them."""
    if not eval_json:
        return []
    rows = [(str(eval_json.get("split", "test")), eval_json)]
    if isinstance(eval_json.get("val"), dict):
        rows.insert(0, ("val", eval_json["val"]))
    return rows


def write_report(workdir: str | os.PathLike, split: str | None = None, num_examples: int = 6,
                 max_items: int = 1000, progress: bool = True) -> Path:
    """Write WORKDIR/report/ (see the module docstring) and return the path of index.html."""
    from tqdm import tqdm

    from plip_jax.api import load_training_run

    workdir = Path(workdir)
    if not workdir.is_dir():
        raise ReportError(f"{workdir}: no such run directory")
    metrics_file = workdir / "metrics.jsonl"
    if not metrics_file.is_file():
        raise ReportError(f"{workdir}: no metrics.jsonl (is this a run workdir?)")
    out_dir = workdir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=5, desc="report", disable=not progress)
    notes: list[str] = []
    parts: dict[str, Path] = {}

    bar.set_postfix_str("loss curves")
    series, bad = read_metrics(metrics_file)
    if bad:
        notes.append(f"metrics.jsonl: {bad} unreadable line(s) skipped")
    parts["losses"] = plot_losses(series, out_dir / "losses.png")
    bar.update(1)
    bar.set_postfix_str("restoring the checkpoint")
    run = load_training_run(workdir)
    split = split or str(run.config.data.get("test_split", "test"))
    bar.update(1)
    bar.set_postfix_str(f"loading {split}")
    ex = load_examples(run, split, num_examples, max_items=max_items)
    bar.update(1)
    bar.set_postfix_str("retrieval")
    retrieval = retrieval_section(run, ex, out_dir / "retrieval.png", num_examples)
    parts["retrieval"] = out_dir / "retrieval.png"
    bar.update(1)
    bar.set_postfix_str("pretext heads")
    outputs = heads_outputs(run, ex.batch)
    colour, attr_rows = None, None
    if "colour_pred" in outputs:
        colour = colorization_section(ex, outputs, out_dir / "colorization.png")
        parts["colorization"] = out_dir / "colorization.png"
    else:
        notes.append("the run did not train the TIC head (colorization): no colorization examples")
    if "iap_logits" in outputs:
        attr_rows = attribute_section(run, ex, outputs)
        (out_dir / "attributes.html").write_text(
            render_page(title="attribute prediction (IAP)", attributes=attr_rows, attributes_only=True),
            encoding="utf-8")
    else:
        notes.append("the run did not train the IAP head (attribute prediction): no attribute examples")
    bar.update(1)
    bar.close()

    c = run.config
    title = f"PLIP {c.model.recipe} | {c.data.name}/{c.data.config} | step {run.step} | tasks {', '.join(run.tasks)}"
    summary_figure(parts, attr_rows, title, out_dir / "summary.png")
    eval_json = json.loads((workdir / "eval.json").read_text()) if (workdir / "eval.json").is_file() else None
    (out_dir / "report.json").write_text(json.dumps(
        {"step": run.step, "split": split, "examples_from": ex.source, "retrieval": retrieval,
         "colorization": colour, "attributes": attr_rows, "notes": notes}, indent=2))

    index = out_dir / "index.html"
    index.write_text(render_page(
        title=title, workdir=str(workdir.resolve()), examples_from=ex.source, split=split,
        eval_rows=_eval_rows(eval_json), retrieval=retrieval[-1], colorization=colour, attributes=attr_rows,
        notes=notes), encoding="utf-8")
    return index


def main(argv: Sequence[str] | None = None) -> int:
    from plip_jax.core.cli import ArgumentParser

    p = ArgumentParser(prog="python -m plip_jax.report", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="run directory (config.json, checkpoints/, metrics.jsonl)")
    p.add_argument("--split", default=None, help="dataset split of the examples (default: the run's test split)")
    p.add_argument("--examples", type=int, default=6, help="examples per section")
    p.add_argument("--max-items", type=int, default=1000, help="at most this many gallery images")
    p.add_argument("--no-progress", action="store_true")
    from plip_jax.core.checkpoint import CheckpointError
    from plip_jax.core.cli import add_debug_flag

    add_debug_flag(p)
    args = p.parse_args(argv)
    if args.examples < 1 or args.max_items < 1:
        print("error: --examples and --max-items must be >= 1", file=sys.stderr)
        return 2
    try:
        index = write_report(args.workdir, args.split, args.examples, args.max_items,
                             progress=not args.no_progress and os.environ.get("PLIP_NO_PROGRESS") != "1")
    except (ReportError, CheckpointError, FileNotFoundError) as e:
        from plip_jax.core.cli import reraise_if_debug

        reraise_if_debug()
        print(f"error: {e}".splitlines()[0], file=sys.stderr)
        return 2
    print(f"wrote {index}")
    return 0



def cli(argv: Sequence[str] | None = None) -> int:
    """`python -m plip_jax.report`: main() with known faults as one `error:` line (plip_jax.core.cli)."""
    from plip_jax.core.checkpoint import CheckpointError
    from plip_jax.core.cli import run_cli

    return run_cli(main, argv, known=(ReportError, CheckpointError))


if __name__ == "__main__":
    sys.exit(cli())
