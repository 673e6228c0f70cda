"""Fitted heads on disk, without pickle: every array in safetensors, the rest in JSON.

A heads directory (default ``RUN_DIR/heads``) holds:

- ``heads.safetensors``: every fitted array, keyed ``<head>.<attribute>`` (e.g. ``svm.basis_``,
  ``svm.dual_coef_``, ``svm.mean_``, ``svm.sigmoid_a_``, ``mlp.w1_``, ``logreg.coef_``);
- ``heads-config.json``: ``{"version": 1, "task", "labels", "pooling", "model", "model_identity",
  "arrays_sha256", "heads": {name: {"class", "params", "state", "temperature"}}}`` where ``params`` are
  the ``__init__`` arguments, ``state`` the fitted scalars (``C_``, ``gamma_``, ``backend_``, ...) and
  ``temperature`` the head's temperatures fitted on validation (absent for regression, under
  ``--no-calibrate`` and in files of vitune 0.2 and older). An ensemble's ``state.members`` names
  the saved heads it averages;
- ``heads.json``: the report of ``vitune heads``, and ``embeddings/`` its cache.

Files written by vitune 0.1 have this layout and load unchanged.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vitune.errors import UserError
from vitune.heads.base import Head, jsonable
from vitune.heads.ensemble import EnsembleHead
from vitune.heads.registry import HEAD_CLASSES
from vitune.storage.atomic import write_atomic
from vitune.storage.layout import HeadsDir

FORMAT_VERSION = 1


def _ensemble_entry(name: str, head: EnsembleHead, heads: dict[str, Head]) -> dict:
    members = []
    for est in head.estimators_:
        match = [n for n, h in heads.items() if h is est]
        if not match:
            raise ValueError(f"ensemble {name!r} has a member that is not saved beside it")
        members.append(match[0])
    state = {"members": members, "weights": head.weights_.tolist(), "backend_": head.backend_}
    return {"class": EnsembleHead.__name__, "params": {}, "state": state}


def save_heads(out_dir: Path | str, heads: dict[str, Head], meta: dict,
               temperatures: dict[str, list[float]] | None = None) -> None:
    """Write ``heads.safetensors`` + ``heads-config.json`` (see the module docstring); no pickle.

    ``temperatures`` (per head name) are stored in each head's entry, so a head and its calibration
    are always written together. Each file is renamed into place whole; the config, written last, records the arrays' digest, so
    a pair torn by a crash between the two is refused on load instead of mixing two fits.
    """
    from safetensors.numpy import save

    where = HeadsDir(out_dir)
    where.root.mkdir(parents=True, exist_ok=True)
    entries, arrays = {}, {}
    for name, head in heads.items():
        if isinstance(head, EnsembleHead):
            entries[name] = _ensemble_entry(name, head, heads)
            continue
        values, head_arrays = head.get_state()
        params = {k: jsonable(v) for k, v in head.get_params(deep=False).items()}
        entries[name] = {"class": type(head).__name__, "params": params, "state": values}
        arrays.update({f"{name}.{key}": value for key, value in head_arrays.items()})
    for name, temperature in (temperatures or {}).items():
        entries[name]["temperature"] = temperature
    data = save(arrays)
    write_atomic(where.arrays, data)
    config = {"version": FORMAT_VERSION, **meta, "arrays_sha256": hashlib.sha256(data).hexdigest(), "heads": entries}
    write_atomic(where.config, json.dumps(config, indent=2) + "\n")


def read_heads_config(heads_dir: Path | str) -> dict:
    """The ``heads-config.json`` of a heads directory (a clear error when missing)."""
    path = HeadsDir(heads_dir).config
    if not path.is_file():
        raise UserError(f"{heads_dir} has no fitted heads ({path.name}): run `vitune heads` first")
    return json.loads(path.read_text())


def head_temperature(config: dict, head: str) -> list[float] | None:
    """The temperatures saved for ``head`` in a ``heads-config.json`` document, or None when it has none."""
    temperature = config["heads"][head].get("temperature")
    return None if temperature is None else [float(value) for value in temperature]


def load_heads(heads_dir: Path | str) -> dict[str, Head]:
    """Fitted heads saved by :func:`save_heads`, by name (members before their ensembles)."""
    from safetensors.numpy import load

    config = read_heads_config(heads_dir)
    data = HeadsDir(heads_dir).arrays.read_bytes()
    if config.get("arrays_sha256", hashlib.sha256(data).hexdigest()) != hashlib.sha256(data).hexdigest():
        raise UserError(f"the heads in {heads_dir} were not saved whole (their files are from two fits): "
                        "run `vitune heads` again")
    arrays = load(data)
    heads: dict[str, Head] = {}
    ensembles_last = sorted(config["heads"].items(), key=lambda item: item[1]["class"] == EnsembleHead.__name__)
    for name, entry in ensembles_last:
        if entry["class"] == EnsembleHead.__name__:
            state = entry["state"]
            members = [(m, heads[m]) for m in state["members"]]
            heads[name] = EnsembleHead(members, state["weights"], prefit=True).fit(None, None)
            continue
        head_arrays = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{name}.")}
        heads[name] = HEAD_CLASSES[entry["class"]].from_state(entry["params"], entry["state"], head_arrays)
    return heads
