"""eval/report.html: one self-contained page in the spirit of pix2pix's result pages, with the
metrics table, the sample grids and the loss curves. The images are embedded (data: URIs), so
the page shows the same from the eval/ folder, from MLflow's artifact view or as an e-mail
attachment, and needs nothing from the internet."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from colorray.atomic import write_text_atomic
from colorray.metrics.registry import better

COLUMNS = ["fid", "lpips", "ssim", "psnr", "psnr_ab", "uiqi", "l1", "colorfulness", "delta_cf",
           "accuracy", "cim", "omega"]
ARROW = {"lower": " ↓", "higher": " ↑", "-": ""}
STYLE = """body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse}
td,th{border:1px solid #bbb;padding:.3em .6em;text-align:right}th{background:#eee}td:first-child{text-align:left}
.best{font-weight:bold;background:#e6f4e6}img{image-rendering:pixelated;max-width:100%}figure{margin:1em 0}
.note{color:#844}.pass{color:#262}.fail{color:#a22;font-weight:bold}"""


def _img(path: Path, alt: str, width: int | None = None) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    w = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"{w}>'


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def metrics_table(models: dict) -> str:
    cols = [c for c in COLUMNS if any(c in m for m in models.values())]
    head = "".join(f"<th>{c}{ARROW[better(c)]}</th>" for c in cols)
    best = {}
    for c in cols:
        way = better(c)
        vals = {n: m[c] for n, m in models.items() if isinstance(m.get(c), (int, float)) and not math.isnan(m[c])}
        if vals and way != "-":
            best[c] = (min if way == "lower" else max)(vals.values())
    rows = []
    for name, m in models.items():
        cells = "".join(f'<td{" class=best" if c in best and m.get(c) == best[c] else ""}>{_fmt(m.get(c))}</td>'
                        for c in cols)
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    return f'<table id="metrics"><tr><th>model</th>{head}</tr>{"".join(rows)}</table>'


def _tests_table(tests: dict) -> str:
    """Each candidate's promotion tests: passed or failed, with the values."""
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{html.escape(t['test'])}</td>"
                   f"<td class={'pass' if t['passed'] else 'fail'}>{'passed' if t['passed'] else 'failed'}</td>"
                   f"<td>{html.escape(t['detail'])}</td></tr>" for name, ts in tests.items() for t in ts)
    return (f'<table id="promotion"><tr><th>model</th><th>promotion test</th><th></th><th>values</th></tr>{rows}</table>'
            if rows else "")


def write_report(summary: dict, out: Path, loss_curves: Path | None = None) -> Path:
    sel, ref, n = summary["selection"], summary["reference"], summary["reference"]["test_images"]
    fid_n = next((m.get("fid_images") for m in summary["models"].values() if "fid_images" in m), None)
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>colorray evaluation</title>"
             f"<style>{STYLE}</style></head><body>",
             "<h1>colorray evaluation</h1>",
             f"<p>{n} test images; data manifest <code>{summary['data']['manifest_sha256'][:16]}</code>; "
             f"MLflow evaluation run <code>{summary['mlflow'].get('run_id')}</code>, training run "
             f"<code>{summary['sources'].get('train_run_id')}</code>.</p>",
             "<h2>Metrics</h2>", metrics_table(summary["models"]),
             "<p>↓ lower is better, ↑ higher is better; best value in bold. gray: ab = 0; reconstruction: "
             "the same generator and budget without the adversarial loss. "
             + ("start: the model the training started from (train.init_from), unchanged. "
                if "start" in summary["models"] else "")
             + (f"FID over {fid_n} vs {fid_n} images. " if fid_n else "")
             + f"Classifier ({ref['classes']} classes) on the {ref['classifier_test_images']} real "
             f"test images of its training classes: accuracy {_fmt(ref.get('accuracy_real'))}, CIM "
             f"{_fmt(ref.get('cim_real'))}. omega: squared distance between the "
             "weights of classifiers trained on real and on colorized training images.</p>",
             *[f'<p class="note">{html.escape(x)}</p>' for x in summary["notes"]],
             "<h2>Model selection</h2>",
             f"<p id=selection>By <b>{html.escape(sel['metric'])}</b>: {html.escape(sel['reason'])}."
             + (f" Registered as <code>{summary['mlflow']['model_uri']}</code> (version "
                f"{summary['mlflow']['version']})." if summary["mlflow"].get("version") else "") + "</p>",
             _tests_table(sel.get("tests", {})),
             "<h2>Samples</h2><p>Columns: gray | reconstruction | GAN"
             + (" | the starting model" if "start" in summary["models"] else "") + " | ground truth (fixed test images).</p>",
             f"<figure>{_img(out / 'samples.png', 'sample grid', 512)}</figure>",
             "<h2>Diversity</h2><p>Columns: gray | colorizations with dropout on | ground truth "
             f"(mean std of ab across samples: {_fmt(summary['models']['gan'].get('diversity_ab_std'))}).</p>",
             f"<figure>{_img(out / 'diversity.png', 'diversity samples', 512)}</figure>"]
    if loss_curves and Path(loss_curves).is_file():
        parts += ["<h2>Training curves</h2>", f"<figure>{_img(Path(loss_curves), 'loss curves')}</figure>"]
    parts.append("</body></html>\n")
    path = Path(out) / "report.html"
    write_text_atomic(path, "\n".join(parts))
    return path
