"""What a written file says about itself: the names of our additions, the model record, the DANDI metadata.

Every column written by :func:`~spikeinterface_neuronid.nwb.write_embeddings_to_nwb` points to one
``NeuronEmbeddingModel`` record, ``/general/neuron_embedding_model``: model name, version and sha256, method
(with fine-tuning and covariates), training-data provenance of the model bundle when its file is available,
embedding dim and inference date. The session and subject metadata of
:func:`~spikeinterface_neuronid.nwb.write_analyzer_to_nwb` are checked here for the fields DANDI requires,
every problem listed in one error.
"""

from __future__ import annotations

import datetime as _dt
import re
import uuid

__all__: list[str] = []

EMBEDDING_COLUMN = "embedding"
MODEL_RECORD_NAME = "neuron_embedding_model"
NAMESPACE = "ndx-neuron-embedding"


def _model_record_kwargs(params: dict, embedding_dim: int) -> dict:
    from .. import __version__

    training = None
    model_url = None
    description = None
    try:
        from ..models import resolve_model

        bundle = resolve_model(params["model"])
        prov = dict(bundle.provenance or {})
        for key in ("training_data_description", "training_data", "dataset", "corpus", "data"):
            if prov.get(key):
                value = prov[key]
                training = value if isinstance(value, str) else repr(value)
                break
        if training is None and prov:
            import json

            training = "Training provenance of the model bundle: " + json.dumps(prov, sort_keys=True, default=str)
        if isinstance(prov.get("url"), str) and prov["url"]:
            model_url = prov["url"]
        description = (
            f"{bundle.method} neuron-embedding model '{bundle.name}' from spikeinterface-neuronid"
            + (f" with task head(s) {sorted(bundle.heads)}" if bundle.heads else "")
            + "."
        )
    except Exception:  # the model file may be gone: the stored params are still enough
        pass
    if training is None:
        training = "Not recorded: the model bundle carries no training-data provenance."
    if description is None:
        description = (
            f"{params.get('method')} neuron-embedding model '{params.get('model_name')}' from spikeinterface-neuronid."
        )
    method = f"spikeinterface-neuronid method '{params.get('method')}'"
    if params.get("fine_tuned_sha256"):
        method += (
            f", fine-tuned for {params.get('fine_tune_steps')} steps on this recording "
            f"(fine-tuned model sha256 {params['fine_tuned_sha256']})"
        )
    cov = params.get("covariates")
    if isinstance(cov, dict):
        method += (
            f", with {cov.get('num_covariates')} covariate channel(s) at {params.get('covariate_rate_hz')} Hz "
            f"from {cov.get('source')} (sha256 {cov.get('sha256')})"
        )
    kwargs = dict(
        name=MODEL_RECORD_NAME,
        description=description,
        model_name=str(params.get("model_name") or "unnamed"),
        model_version=__version__,
        model_checksum=str(params["model_sha256"]),
        checksum_algorithm="sha256",
        method=method,
        training_data_description=training,
        embedding_dim=int(embedding_dim),
        inference_software=f"spikeinterface-neuronid {__version__}",
        inference_date=_dt.datetime.now(_dt.timezone.utc),
    )
    if model_url:
        kwargs["model_url"] = model_url
    return kwargs


_SEXES = ("M", "F", "U", "O")
_DURATION = r"P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?"
_AGE_RE = re.compile(rf"^(?:{_DURATION})?(?:/(?:{_DURATION})?)?$")
_SPECIES_RE = re.compile(r"^([A-Z][a-z]+ [a-z]+.*|https?://\S*NCBITaxon\S*)$")

_METADATA_EXAMPLE = """metadata = {
    "NWBFile": {"session_description": "...", "session_start_time": "2024-01-01T12:00:00+00:00",
                "identifier": "<optional, a new UUID by default>"},
    "Subject": {"subject_id": "m1", "species": "Mus musculus", "sex": "F", "age": "P60D"},
}"""


def _as_datetime(value, field: str, problems: list[str]):
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value)
        except ValueError:
            problems.append(f"{field}={value!r} is not an ISO 8601 date-time (e.g. '2024-01-01T12:00:00+00:00')")
            return None
    if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
        value = _dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, _dt.datetime):
        problems.append(f"{field} must be a datetime or an ISO 8601 string, got {type(value).__name__}")
        return None
    if value.tzinfo is None:
        problems.append(
            f"{field}={value.isoformat()!r} has no time zone; give one, e.g. "
            "datetime(2024, 1, 1, 12, tzinfo=timezone.utc) or '2024-01-01T12:00:00+00:00'"
        )
        return None
    return value


def _check_metadata(metadata: dict | None, require_subject: bool) -> dict:
    """Validate neuroconv-style metadata; return a normalised deep copy. Lists every problem in one error."""
    import copy

    metadata = copy.deepcopy(dict(metadata or {}))
    unknown = sorted(set(metadata) - {"NWBFile", "Subject"})
    if unknown:
        raise ValueError(
            f"metadata has unknown section(s) {unknown}; write_analyzer_to_nwb uses only 'NWBFile' and 'Subject':\n"
            + _METADATA_EXAMPLE
        )
    nwb = dict(metadata.get("NWBFile") or {})
    problems: list[str] = []
    if not str(nwb.get("session_description") or "").strip():
        problems.append("NWBFile.session_description is missing (a sentence describing the session)")
    if nwb.get("session_start_time") is None:
        problems.append("NWBFile.session_start_time is missing (a time-zone-aware datetime or ISO 8601 string)")
    else:
        nwb["session_start_time"] = _as_datetime(nwb["session_start_time"], "NWBFile.session_start_time", problems)
    nwb.setdefault("identifier", str(uuid.uuid4()))
    if "/" in str(nwb.get("session_id") or ""):
        problems.append(f"NWBFile.session_id={nwb['session_id']!r} must not contain '/' (DANDI)")
    subject = metadata.get("Subject")
    if subject is None and require_subject:
        problems.append("Subject is missing (DANDI needs subject_id, species, sex and age or date_of_birth)")
    if subject is not None:
        subject = dict(subject)
        sid = str(subject.get("subject_id") or "")
        if not sid.strip():
            problems.append("Subject.subject_id is missing")
        elif "/" in sid:
            problems.append(f"Subject.subject_id={sid!r} must not contain '/' (DANDI)")
        species = subject.get("species")
        if not species and require_subject:
            problems.append("Subject.species is missing (a Latin binomial such as 'Mus musculus', or an NCBITaxon URL)")
        elif species and not _SPECIES_RE.match(str(species)):
            problems.append(
                f"Subject.species={species!r} is not a Latin binomial ('Mus musculus') nor an NCBITaxon URL (DANDI)"
            )
        sex = subject.get("sex")
        if sex is None and require_subject:
            problems.append(f"Subject.sex is missing (one of {', '.join(_SEXES)}; U = unknown)")
        elif sex is not None and sex not in _SEXES:
            problems.append(f"Subject.sex={sex!r} must be one of {', '.join(_SEXES)} (U = unknown, O = other; DANDI)")
        age, dob = subject.get("age"), subject.get("date_of_birth")
        if dob is not None:
            subject["date_of_birth"] = _as_datetime(dob, "Subject.date_of_birth", problems)
        if age is None and dob is None and require_subject:
            problems.append("Subject.age is missing (an ISO 8601 duration such as 'P60D', or give date_of_birth)")
        elif age is not None and not _AGE_RE.match(str(age)):
            problems.append(f"Subject.age={age!r} is not an ISO 8601 duration such as 'P60D' or a range 'P60D/P90D'")
        subject.setdefault("description", f"Subject {sid}.")
        metadata["Subject"] = subject
    if problems:
        raise ValueError(
            "the NWB metadata is incomplete:\n  - "
            + "\n  - ".join(problems)
            + "\nPass metadata like\n"
            + _METADATA_EXAMPLE
            + ("\nor require_subject=False to write a file without a DANDI-ready subject." if require_subject else "")
        )
    metadata["NWBFile"] = nwb
    return metadata
