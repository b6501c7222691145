"""Contracts: validation errors name the bad value; committed snapshots match the code."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pydantic import ValidationError

from earmark.contracts import OUTPUT_SCHEMA, JobSpec, ModelSpec, parse_tasks, rows_to_table
from earmark.contracts.snapshots import snapshots
from paths import REPO


def test_committed_snapshots_match_code():
    for name, text in snapshots().items():
        path = REPO / "schemas" / name
        assert path.exists(), f"{name} missing: run `earmark schemas export`"
        assert path.read_text() == text, f"{name} drifted: run `earmark schemas export`"


def test_task_parsing():
    tasks = parse_tasks('asr,caption,mood="What mood, if any?"')
    assert [t.name for t in tasks] == ["asr", "caption", "mood"]
    assert tasks[2].prompt == "What mood, if any?"
    with pytest.raises(ValueError, match="unknown task 'bogus'"):
        parse_tasks("asr,bogus")
    with pytest.raises(ValueError, match="twice"):
        parse_tasks("asr,asr")
    # a quote opens only where a prompt starts; an apostrophe inside a prompt is a letter
    assert parse_tasks("q=What's this?,asr")[0].prompt == "What's this?"
    assert parse_tasks("q='a, b',asr")[0].prompt == "a, b"
    with pytest.raises(ValueError, match="unterminated"):
        parse_tasks('asr,mood="What mood')


def test_job_spec_errors_name_the_field():
    with pytest.raises(ValidationError) as ei:
        JobSpec.model_validate(
            {"source": "a", "output": "b", "resources": {"min_actors": 3, "max_actors": 1}}
        )
    assert "min_actors (3) is larger than max_actors (1)" in str(ei.value)
    with pytest.raises(ValidationError) as ei:
        JobSpec.model_validate({"source": "a", "output": "b", "model": {"family": "gpt"}})
    assert "unknown model family 'gpt'" in str(ei.value)
    with pytest.raises(ValidationError) as ei:
        JobSpec.model_validate({"source": "a", "output": "b", "colour": "red"})
    assert "colour" in str(ei.value)


def test_job_id_is_deterministic():
    a = JobSpec(source="s3://b/x", output="/o", tasks="asr,tags")
    b = JobSpec(source="s3://b/x", output="/o", tasks=["asr", "tags"])
    c = JobSpec(source="s3://b/x", output="/other", tasks="asr,tags")
    assert a.job_id == b.job_id != c.job_id


def test_model_spec_parse():
    assert ModelSpec.parse("whisper").checkpoint is None
    m = ModelSpec.parse("eureka:/ckpt/dir")
    assert (m.family, m.checkpoint) == ("eureka", "/ckpt/dir")


def test_rows_to_table_nulls_missing_columns():
    t = rows_to_table([{"audio_id": "a", "uri": "u", "status": "ok", "meta": {"k": "v"}}])
    assert t.schema == OUTPUT_SCHEMA
    row = t.to_pylist()[0]
    assert row["transcript"] is None and row["tags"] is None and row["meta"] == [("k", "v")]
    assert isinstance(t.schema.field("created_at").type, pa.TimestampType)


def test_a_family_option_reaches_the_backend_and_others_refuse_it():
    import hashlib
    import json

    spec = JobSpec(source="/a", output="/o", model={"family": "whisper", "language": "de"})
    assert spec.model.language == "de"
    with pytest.raises(ValidationError, match="model family 'eureka' takes no 'language'"):
        JobSpec(source="/a", output="/o", model={"family": "eureka", "language": "de"})
    with pytest.raises(ValidationError, match="language"):
        ModelSpec(family="whisper", language="German!")
    # an option left unset does not move the job id of outputs made before it existed
    plain = JobSpec(source="/a", output="/o", model={"family": "whisper"})
    before = plain.model.model_dump()
    before.pop("language")
    before.pop("engine")  # nor does the default engine (hf), added later
    key = json.dumps(["/a", "/o", before, ["asr"]], sort_keys=True)
    assert plain.job_id == "em-" + hashlib.sha256(key.encode()).hexdigest()[:12]
    assert spec.job_id != plain.job_id
    moss = {"family": "moss", "checkpoint": "/m"}
    on_vllm = JobSpec(source="/a", output="/o", model={**moss, "engine": "vllm"})
    assert on_vllm.job_id != JobSpec(source="/a", output="/o", model=moss).job_id


def test_an_engine_a_family_lacks_is_refused():
    with pytest.raises(ValidationError, match="'eureka' cannot run on engine 'vllm'.*hf"):
        ModelSpec(family="eureka", engine="vllm")
    with pytest.raises(ValidationError, match="engine"):
        ModelSpec(family="moss", engine="tensorrt")
    assert ModelSpec.parse("midashenglm:/m", engine="vllm").engine == "vllm"


def test_the_language_option_is_passed_to_whisper(monkeypatch):
    from earmark.models import registry

    seen = {}

    class Recorder:
        info = registry.FAMILIES["whisper"]

        def __init__(self, checkpoint, **kw):
            seen.update(kw)

    monkeypatch.setattr(registry, "model_class", lambda name, engine="hf": Recorder)
    registry.load_model(ModelSpec(family="whisper", language="de"))
    assert seen["language"] == "de" and seen["pack_windows"] is True
