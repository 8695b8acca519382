"""What determines the content of a generate output's shards (its fingerprint): a resumed job reuses shards only
when it matches, and a changed prompt, model or criterion starts them afresh."""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import asdict
from pathlib import Path
from typing import Any

from s2d.engine.core.methods import resolve_method
from s2d.engine.core.spec import JobSpec
from s2d.engine.data.shards import spec_fingerprint
from s2d.engine.data.sources import source_fingerprint


def generation_fingerprint(spec: JobSpec) -> str:
    """What determines the content of shards: changing any of these makes old shards stale."""
    return spec_fingerprint(
        {
            "model": spec.model,
            "task": spec.task.model_dump(),
            "method": spec.method.model_dump(),
            # What the method sends: a built-in's prompts and stops live in s2d's files, not in the spec, and an
            # edited prompt must not mix old and new samples in one output.
            "method_definition": method_definition(spec),
            "sampling": spec.sampling.model_dump(),
            "curate": spec.curate.model_dump(),
            "inputs_per_shard": spec.output.inputs_per_shard,
            "keep_samples": spec.output.keep_samples,
            "data": spec.data.model_dump(exclude={"eval_path"}),
            "data_content": source_fingerprint(spec),
            # dtype changes the numbers the model computes, max_model_len which inputs fit (too_long); the other
            # engine settings (parallelism, memory, caching, graphs) change speed and placement, not what is sampled,
            # so a job may be resumed with them changed (to get past an out-of-memory, say).
            "engine": spec.engine.model_dump(include={"dtype", "max_model_len"}),
            "weights": model_identity(spec.model),
            # User files: duplicates stay in the shard of the input they repeat (s2d.engine.data.inputs); outputs
            # written before that must not be resumed by this code.
            **({"input_layout": 2} if spec.data.path else {}),
        }
    )


def method_definition(spec: JobSpec) -> dict[str, Any]:
    """The resolved method's steps (prompts, stops, fan-out, computed steps) and extractor."""
    method = resolve_method(spec.method.model_dump())
    return {"steps": [asdict(step) for step in method.steps], "extractor": asdict(method.extractor)}


def model_identity(ref: str) -> dict[str, Any]:
    """What the weights behind `model:` are, cheaply and stably: the packaged model's package version; a local
    folder's config.json and each other file's name, size and mtime (not a hash of gigabytes: replaced weights
    change them); a hub id by its name and the revision the HF cache holds for it (the snapshot that loads here,
    offline; none when it is not cached)."""
    from s2d.engine.data.models import PACKAGED_MODELS

    if ref in PACKAGED_MODELS:
        return {
            "package": PACKAGED_MODELS[ref].package,
            "version": importlib.metadata.version(PACKAGED_MODELS[ref].package),
        }
    folder = Path(ref).expanduser()
    if not folder.is_dir():
        return {"hub_id": ref, "revision": _cached_hub_revision(ref)}
    files = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.name == "config.json":
            files[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        else:
            stat = path.stat()
            files[path.name] = [stat.st_size, stat.st_mtime_ns]
    return {"folder_files": files}


def _cached_hub_revision(repo_id: str) -> str | None:
    """The commit of the snapshot the HF cache resolves `repo_id` to (its config.json's folder), read offline."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a repo id the hub accepts
        return None
    return Path(found).parent.name if isinstance(found, str) else None
