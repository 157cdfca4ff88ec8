"""The evaluate stage, which picks the model.

`evaluate`: every model (the GAN, the reconstruction baseline, the model the training started
  from when train.init_from names one, and gray = ab 0) on the test split with the metric
  registry (colorray.metrics.registry) and the classifier metrics; writes
  eval/metrics.json, eval/samples.png, eval/diversity.png, eval/report.html; records an MLflow
  evaluation run linked to the training run; logs each candidate's test metrics to its
  LoggedModel and registers each as a version of `colorray`; moves `models:/colorray@champion`
  to the best model on evaluate.select_by among those that pass the promotion tests (`select`:
  beat gray on that metric, lose at most max_psnr_loss_db of PSNR and max_ssim_loss of SSIM to
  gray); a person may move it to another version in the MLflow UI: colorize and serve follow
  the alias.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from pathlib import Path
from typing import Callable

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient

from colorray.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic
from colorray.color import lab_to_rgb_normalized, rgb_uint8_to_lab, to_uint8
from colorray.colorize import enable_dropout
from colorray.config import Params
from colorray.data.loader import load_split
from colorray.data.shards import MANIFEST, read_manifest
from colorray.data.storage import location, read_bytes
from colorray.images import encode
from colorray.metrics import classifier as clf
from colorray.metrics.fid import FIDUnavailable, inception_extractor
from colorray.metrics.registry import (LOWER, NEITHER, MetricAccumulator, better, lpips_model,
                                       lpips_unavailable_message)
from colorray.config import parse_params
from colorray.models.files import generator_from_state, load_generator, save_generator
from colorray.progress import Progress
from colorray.pyfunc import log_colorizer
from colorray.real_classifier import classes_seen
from colorray.report import write_report
from colorray import tracking
from colorray.tracking import setup_mlflow
from colorray.train import init_from

REGISTERED_NAME, ALIAS = "colorray", "champion"
# The models that may be promoted: the trained ones, and the starting model of a fine-tuning
# (train.init_from), which stays the champion when fine-tuning made it worse. Gray is the bar.
CANDIDATES = ("gan", "reconstruction", "start")


# ---- evaluation ----------------------------------------------------------------------------------

@torch.no_grad()
def colorize_split(G, rgb8: torch.Tensor, batch: int = 128, acc: MetricAccumulator | None = None) -> torch.Tensor:
    """Colorize (N, H, W, 3) uint8 images at their size (G=None: gray, ab = 0); feeds `acc`."""
    out = []
    for i in range(0, len(rgb8), batch):
        L, ab = rgb_uint8_to_lab(rgb8[i:i + batch])
        fake = torch.zeros_like(ab) if G is None else G(L).float()
        rgb = acc.update(L, fake, ab) if acc is not None else lab_to_rgb_normalized(L, fake)
        out.append(to_uint8(rgb))
    return torch.cat(out)


def manifest_hash(shards: str) -> str:
    return hashlib.sha256(read_bytes(shards, MANIFEST)).hexdigest()


def _value(m: dict, key: str) -> float | None:
    v = m.get(key)
    return None if v is None or math.isnan(v) else float(v)


def promotion_tests(results: dict, name: str, metric: str, max_psnr_loss_db: float | None,
                    max_ssim_loss: float | None) -> list[dict]:
    """What a candidate must pass to be promoted: beat leaving the photos gray on the selection
    metric, and lose at most the given margins of fidelity (PSNR, SSIM) to gray. A margin of
    None skips that test; a fidelity metric that could not be measured fails it."""
    gray, m = results.get("gray", {}), results[name]
    sign = 1 if better(metric) == LOWER else -1
    v, g = _value(m, metric), _value(gray, metric)
    tests = [{"test": f"beats gray on {metric}", "passed": v is not None and (g is None or sign * v < sign * g),
              "detail": f"{v:.4g} vs gray {g:.4g}" if v is not None and g is not None else f"{metric} {v} vs gray {g}"}]
    for key, margin, unit in (("psnr", max_psnr_loss_db, " dB"), ("ssim", max_ssim_loss, "")):
        if margin is None:
            continue
        c, gv = _value(m, key), _value(gray, key)
        if c is None or gv is None:
            tests.append({"test": f"{key} within {margin:g}{unit} of gray", "passed": False,
                          "detail": f"{key} was not measured", "loss": None})
            continue
        loss = gv - c
        tests.append({"test": f"{key} within {margin:g}{unit} of gray", "passed": loss <= margin, "loss": loss,
                      "detail": f"{c:.4g} vs gray {gv:.4g}: {'loses' if loss > 0 else 'gains'} {abs(loss):.3g}{unit}"})
    return tests


def select(results: dict, metric: str, max_psnr_loss_db: float | None = None,
           max_ssim_loss: float | None = None) -> dict:
    """The candidate to promote: the best on `metric` among those that pass every promotion
    test; when none passes, the best on `metric` is named, not promoted, with what it failed."""
    way = better(metric)
    if way == NEITHER:
        raise ValueError(f"evaluate.select_by={metric}: colorray.metrics.registry gives it no better direction")
    sign = 1 if way == LOWER else -1
    scored = {n: _value(results[n], metric) for n in CANDIDATES if n in results}
    scored = {n: v for n, v in scored.items() if v is not None}
    if not scored:
        return {"metric": metric, "better": way, "chosen": None, "promoted": False, "tests": {},
                "reason": f"not promoted, because no model has a value of {metric}"}
    tests = {n: promotion_tests(results, n, metric, max_psnr_loss_db, max_ssim_loss) for n in scored}
    qualified = [n for n in scored if all(t["passed"] for t in tests[n])]
    chosen = min(qualified or scored, key=lambda n: sign * scored[n])
    margins = " and ".join(t["test"] for t in tests[chosen][1:])

    def failures(names) -> str:
        return "; ".join(f"{n}: " + ", ".join(f"{t['test']} failed ({t['detail']})" for t in tests[n] if not t["passed"])
                         for n in sorted(names, key=lambda n: sign * scored[n]))

    if qualified:
        passed_over = [n for n in scored if n not in qualified and sign * scored[n] < sign * scored[chosen]]
        reason = (f"{chosen} has the best {metric} ({scored[chosen]:.4g}, {way} is better) of the models that "
                  f"beat gray on it{' and keep ' + margins if margins else ''} ("
                  + "; ".join(t["detail"] for t in tests[chosen]) + ")"
                  + (f"; passed over, better on {metric} but failing a test: {failures(passed_over)}"
                     if passed_over else ""))
    else:
        reason = f"not promoted, because no model passes every test ({failures(scored)})"
    return {"metric": metric, "better": way, "chosen": chosen, "value": scored[chosen],
            "gray": _value(results.get("gray", {}), metric), "promoted": bool(qualified), "reason": reason,
            "tests": tests, "max_psnr_loss_db": max_psnr_loss_db, "max_ssim_loss": max_ssim_loss}


def _grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Rows of equally sized HWC uint8 images -> one image, white gaps between them."""
    h, w = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            out[pad + i * (h + pad):pad + i * (h + pad) + h, pad + j * (w + pad):pad + j * (w + pad) + w] = im
    return out


@torch.no_grad()
def diversity(G, rgb8: torch.Tensor, samples: int, seed: int = 0) -> tuple[list[list[np.ndarray]], float]:
    """Rows gray | `samples` colorizations with dropout on | truth, and the mean per-pixel
    standard deviation of ab across the samples (0: dropout changes nothing)."""
    L, ab = rgb_uint8_to_lab(rgb8)
    torch.manual_seed(seed)
    fakes = torch.stack([enable_dropout(G)(L).float() for _ in range(samples)])
    G.eval()
    spread = float(fakes.std(0).mean())
    cols = [to_uint8(lab_to_rgb_normalized(L, torch.zeros_like(ab)))]
    cols += [to_uint8(lab_to_rgb_normalized(L, f)) for f in fakes]
    cols.append(to_uint8(lab_to_rgb_normalized(L, ab)))
    return [[c[i].numpy() for c in cols] for i in range(len(rgb8))], spread


def evaluate(params: Params, shards: str | Path, gan_path: Path, baseline_path: Path, classifier_path: Path,
             out: Path, root: Path, loss_curves: Path | None = None, log: Callable[[str], None] = print,
             init: Path | None = None) -> dict:
    """init: the init stage's models/init.pt; when it names a starting model (train.init_from),
    that model is the candidate "start"."""
    e, shards, out = params.evaluate, location(shards), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    test_rgb, _, test_labels = load_split(shards, "test", e.max_images)
    model, classes, s = clf.load(classifier_path)
    notes, fid = [], None
    if model is not None:
        y_test = clf.label_indices(test_labels, classes, f"{shards} test split")
        train_rgb, _, train_labels = load_split(shards, "train", s["max_train_images"])
        y_train = clf.label_indices(train_labels, classes, f"{shards} train split")
    else:
        notes.append(f"accuracy, CIM and omega unavailable: {s['unavailable']}")

    try:
        fid = inception_extractor(params.metrics.fid_weights)
    except FIDUnavailable as err:
        notes.append(str(err))
    lpips = lpips_model()
    if lpips is None:
        notes.append(lpips_unavailable_message())
    for n in notes:
        log(f"evaluate: {n}")
    fid_cache = out / "fid_stats"
    fid_cache.mkdir(exist_ok=True)
    write_text_atomic(fid_cache / "README.txt", "pytorch-fid statistics of the real test images, one .npz per "
                      "(data, detector) hash (colorray.metrics.fid.cached_statistics).\n")
    fid_key = json.dumps(read_manifest(shards)["splits"]["test"], sort_keys=True)

    generators = {"gray": (None, None, {}), "reconstruction": load_generator(baseline_path),
                  "gan": load_generator(gan_path)}
    paths = {"gan": gan_path, "reconstruction": baseline_path}
    start = init_from.load(init) if init is not None else None
    if start is not None:
        record = init_from.read_record(Path(init).parent)
        start_params = parse_params(start["params"], origin=f"{init} (the starting model's parameters)")
        # Logged anew in the evaluation run (as the baseline is): its test metrics and candidate
        # tags go to a model of this evaluation, not to the source's own logged model.
        generators["start"] = (generator_from_state(start_params, start["G"]), start_params,
                               {"init_from": record.get("init_from"), "iter": start.get("iter")})
        paths["start"] = Path(init)
    # Accuracy and CIM on the test images whose class the classifier was trained on.
    known = classes_seen(train_labels, test_labels) if model is not None else torch.zeros(len(test_rgb), dtype=torch.bool)
    reference = {"test_images": len(test_rgb), "classes": len(classes), "classifier_test_images": int(known.sum())}
    if known.any():
        y_known = y_test[known]
        p_real = clf.predict(model, test_rgb[known])
        p_gray = clf.predict(model, colorize_split(None, test_rgb[known]))
        pc, pg = clf.true_class_probability(p_real, y_known), clf.true_class_probability(p_gray, y_known)
        reference.update(accuracy_real=clf.accuracy(p_real, y_known), cim_real=clf.cim(pc, pc, pg))
    elif model is not None:
        notes.append(f"accuracy and CIM unavailable: no test image has a class of the training split (test "
                     f"classes: {', '.join(sorted(set(test_labels))[:5])}); the data source splits by photo or "
                     "class. omega is still measured (it compares classifiers trained on training images).")
        log(f"evaluate: {notes[-1]}")

    results, firsts = {}, {"truth": test_rgb[:e.grid_images].numpy()}
    for name, (G, _, _) in generators.items():
        log(f"evaluate: {name} on {len(test_rgb)} test images")
        acc = MetricAccumulator(fid=fid, fid_cache=fid_cache, fid_key=fid_key, lpips=lpips)
        fake = colorize_split(G, test_rgb, acc=acc)
        m = acc.result()
        if known.any():
            p_fake = clf.predict(model, fake[known])
            m["accuracy"] = clf.accuracy(p_fake, y_known)
            m["cim"] = clf.cim(clf.true_class_probability(p_fake, y_known), pc, pg)
        if model is not None:
            colorized = colorize_split(G, train_rgb)
            progress = Progress(f"evaluate: {name}: omega's classifier on its colorized training images",
                                s["epochs"] * math.ceil(len(train_rgb) / s["batch_size"]), "batches", log)
            clf_g = clf.train_classifier(colorized, y_train, len(classes), epochs=s["epochs"],
                                         batch_size=s["batch_size"], lr=s["lr"], seed=s["seed"], width=s["width"],
                                         progress=progress)
            m["omega"] = clf.omega(model, clf_g)
        results[name] = m
        firsts[name] = fake[:e.grid_images].numpy()
    G_gan, gan_params, gan_meta = generators["gan"]
    rows, spread = diversity(G_gan, test_rgb[:e.diversity_images], e.diversity_samples, gan_params.train.seed)
    results["gan"]["diversity_ab_std"] = spread

    select_by = e.select_by if e.select_by != "auto" else ("fid" if fid is not None else "delta_cf")
    selection = select(results, select_by, e.max_psnr_loss_db, e.max_ssim_loss)
    order = ("gray", "reconstruction", "gan", *(["start"] if "start" in firsts else []), "truth")
    write_bytes_atomic(out / "samples.png", encode(_grid([[firsts[k][i] for k in order]
                                                         for i in range(len(firsts["truth"]))])))
    write_bytes_atomic(out / "diversity.png", encode(_grid(rows)))
    summary = {"models": results, "reference": reference, "selection": selection, "notes": notes,
               "data": {"shards": str(shards), "manifest_sha256": manifest_hash(shards)},
               "sources": {"gan": str(gan_path), "reconstruction": str(baseline_path),
                           **({"start": generators["start"][2]["init_from"]} if "start" in generators else {}),
                           "train_run_id": gan_meta.get("run_id"),
                           "reconstruction_precision": generators["reconstruction"][2].get("precision", {})}}
    tracking_uri, experiment_id = setup_mlflow(Path(root).resolve())
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"evaluate by {select_by}: {selection['chosen']}"
                          f"{' promoted' if selection['promoted'] else ' not promoted'}") as run:
        summary["mlflow"] = _record(params, summary, out, run.info.run_id, MlflowClient(tracking_uri), paths,
                                    {n: generators[n][2] for n in paths}, shards, log,
                                    {n: generators[n][:2] for n in paths})
        write_report(summary, out, loss_curves)
        write_json_atomic(out / "metrics.json", _dvc_metrics(summary))
        for f in ("metrics.json", "report.html"):
            mlflow.log_artifact(str(out / f), artifact_path="eval")
    return summary


def _dvc_metrics(summary: dict) -> dict:
    """eval/metrics.json: one entry per model (baselines included), the reference values and
    the selection, numbers only where `dvc metrics show` expects them."""
    sel = summary["selection"]
    return {**summary["models"], "reference": summary["reference"],
            "selection": {"metric": sel["metric"], "chosen": sel["chosen"], "promoted": sel["promoted"],
                          "reason": sel["reason"], "registered_version": summary["mlflow"].get("version"),
                          "max_psnr_loss_db": sel.get("max_psnr_loss_db"), "max_ssim_loss": sel.get("max_ssim_loss"),
                          # per candidate: each promotion test, passed or not, and the fidelity lost to gray
                          "tests": {n: {t["test"]: {"passed": t["passed"], **({"loss": t["loss"]} if "loss" in t else {})}
                                        for t in ts} for n, ts in sel.get("tests", {}).items()}},
            "notes": summary["notes"], "data": {"manifest_sha256": summary["data"]["manifest_sha256"]}}


def _description(params: Params, summary: dict, name: str) -> str:
    sel = summary["selection"]
    m = summary["models"][name]
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}
    verdict = ("the selected model" if sel["chosen"] == name and sel["promoted"] else
               "selected, but not promoted" if sel["chosen"] == name else "not selected")
    tests = "".join(f"\n- {t['test']}: {'passed' if t['passed'] else 'FAILED'} ({t['detail']})"
                    for t in sel.get("tests", {}).get(name, []))
    return (f"colorray {name} generator, evaluated on the test split: {verdict}. Selection by "
            f"{sel['metric']}: {sel['reason']}.\n\nPromotion tests of this model:{tests or ' none'}\n\n"
            f"data manifest sha256: {summary['data']['manifest_sha256']}\n"
            f"training run: {_source(summary, name)}\n"
            f"test metrics: {json.dumps(shown, sort_keys=True)}\n"
            f"parameters: {json.dumps(params.model_dump(mode='json', exclude={'tune', 'evaluate', 'classifier'}), sort_keys=True)}")


def _source(summary: dict, name: str) -> str:
    if name == "gan":
        return str(summary["sources"].get("train_run_id"))
    if name == "start":
        return f"none: the model the training started from (train.init_from: {summary['sources'].get('start')})"
    return "the baseline stage"


def _logged_model(name: str, path: Path, meta: dict, log, model: tuple | None = None) -> str:
    """The model id of a candidate's LoggedModel: the train stage's (from its generator file),
    else logged now in the evaluation run (the baseline stage has no run of its own; `model`,
    (G, params), for the starting model, whose models/init.pt is no generator file)."""
    uri = meta.get("model_uri") or ""
    if uri.startswith("models:/m-"):
        return uri[len("models:/"):]
    if model is not None and name == "start":
        with tempfile.TemporaryDirectory(prefix="colorray-start-") as tmp:
            G, p = model
            save_generator(G, p, int(meta.get("iter") or 0), Path(tmp) / "generator.pt", kind="start",
                           init_from=str(meta.get("init_from")))
            logged = log_colorizer(Path(tmp) / "generator.pt", tags={"colorray.candidate": name})
        log(f"evaluate: logged the starting model ({meta.get('init_from')}) as models:/{logged.model_id}")
        return logged.model_id
    model = log_colorizer(path, tags={"colorray.candidate": name})
    log(f"evaluate: logged the {name} generator as models:/{model.model_id}")
    return model.model_id


def _record(params: Params, summary: dict, out: Path, run_id: str, client: MlflowClient, paths: dict,
            metas: dict, shards: str, log, models: dict | None = None) -> dict:
    """Into the active evaluation run `run_id`: its tags, parameters, metrics and images, its
    link to the training run. Each candidate's test metrics go to its LoggedModel (MLflow's
    Logged Models view ranks them), each candidate is registered as a version of `colorray`
    (its metrics and the selection in the description), and `@champion` moves to the
    selected one if it is promoted."""
    train_run = summary["sources"].get("train_run_id")
    sel = summary["selection"]
    info = {"run_id": run_id}
    mlflow.set_tags({"colorray.stage": "evaluate", "colorray.train_run_id": train_run or "",
                     "colorray.selected": sel["chosen"] or "", "colorray.promoted": str(sel["promoted"]),
                     "mlflow.note.content": sel["reason"],
                     # the baseline stage has no run of its own: the mode it trained in is recorded here
                     **{f"colorray.baseline.precision.{k}": str(v)
                        for k, v in summary["sources"]["reconstruction_precision"].items()}})
    mlflow.log_params({"evaluate.select_by": sel["metric"], "data.manifest_sha256": summary["data"]["manifest_sha256"],
                       "evaluate.test_images": summary["reference"]["test_images"]})
    tracking.log_shards(shards, "test")
    dataset = tracking.shards_dataset(shards)

    def numbers(m: dict) -> dict:
        return {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and not math.isnan(v)}

    mlflow.log_metrics({f"{name}/{k}": v for name, m in summary["models"].items() for k, v in numbers(m).items()})
    for f in ("samples.png", "diversity.png"):
        mlflow.log_artifact(str(out / f), artifact_path="eval")
    if train_run:
        client.set_tag(train_run, "colorray.evaluation_run_id", run_id)
    info["models"] = {}
    for name in (n for n in CANDIDATES if n in paths):
        model_id = _logged_model(name, paths[name], metas[name], log, (models or {}).get(name))
        mlflow.log_metrics({f"test/{k}": v for k, v in numbers(summary["models"][name]).items()},
                           model_id=model_id, dataset=dataset)
        client.set_logged_model_tags(model_id, {"colorray.candidate": name, "colorray.evaluation_run_id": run_id,
                                                "colorray.selected": str(sel["chosen"] == name and sel["promoted"])})
        entry = {"model_uri": f"models:/{model_id}"}
        if params.evaluate.register_model:
            mv = mlflow.register_model(f"models:/{model_id}", REGISTERED_NAME,
                                       tags={"colorray.candidate": name, "colorray.evaluation_run_id": run_id})
            client.update_model_version(REGISTERED_NAME, mv.version, description=_description(params, summary, name))
            entry["version"] = int(mv.version)
        info["models"][name] = entry
    if not sel["promoted"]:
        log(f"evaluate: {sel['reason']}")
    elif params.evaluate.register_model:
        version = info["models"][sel["chosen"]]["version"]
        client.set_registered_model_alias(REGISTERED_NAME, ALIAS, str(version))
        info.update(version=version, model_uri=f"models:/{REGISTERED_NAME}@{ALIAS}")
        log(f"evaluate: {sel['reason']}; registered the candidates as versions "
            f"{', '.join(str(e['version']) for e in info['models'].values())} of {REGISTERED_NAME}; "
            f"models:/{REGISTERED_NAME}@{ALIAS} is version {version} ({sel['chosen']})")
    return info
