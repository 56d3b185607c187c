import json

import pytest

from alignkit.data.sources import load_pairs, seeded_sample, split_by_prompt
from alignkit.data.templates import PreferencePair, get_template
from alignkit.errors import AlignkitError, DataError


def test_homework_on_real_rows(data_dir):
    rows = json.loads((data_dir / "align_anything_t2t.json").read_text())
    homework = get_template("HOMEWORK")
    row = rows[0]
    pair = homework(row)
    better, worse = (row["response_1"], row["response_2"]) if int(row["overall_response"]) == 1 else \
        (row["response_2"], row["response_1"])
    assert pair.prompt == ({"role": "user", "content": row["question"]},)
    assert (pair.better, pair.worse) == (better, worse)
    # The Hub parquet spells the label as a string; both spellings map the same way.
    assert homework({**row, "overall_response": str(row["overall_response"])}) == pair


def test_homework_file_skips_the_identical_pair(data_dir):
    pairs, report = load_pairs(str(data_dir / "align_anything_t2t.json"), "HOMEWORK")
    assert report.rows == 848 and len(pairs) == 847
    assert report.skipped == {"identical responses": 1}


def test_pku_better_and_safer_labels(data_dir):
    row = json.loads((data_dir / "pku_saferlhf_500.jsonl").read_text().splitlines()[0])
    helpful = get_template("PKUSafeRLHF")(row)
    safer = get_template("PKUSafeRLHF-safer")(row)
    b, s = int(row["better_response_id"]), int(row["safer_response_id"])
    assert helpful.better == row[f"response_{b}"] and helpful.worse == row[f"response_{1 - b}"]
    assert safer.better == row[f"response_{s}"]
    assert helpful.meta["better_severity"] == int(row[f"response_{b}_severity_level"])
    assert isinstance(helpful.meta["better_harm_categories"], list)


def test_hh_rlhf_transcripts(data_dir):
    pairs, report = load_pairs(str(data_dir / "hh_rlhf_helpful_500.jsonl"), "HHRLHF")
    pair = pairs[0]
    assert pair.prompt[0]["role"] == "user" and pair.prompt[-1]["role"] == "user"
    assert all(m["content"] for m in pair.prompt)
    assert pair.better != pair.worse and "Human:" not in pair.better
    assert len(pairs) + sum(report.skipped.values()) == 500


def test_prompt_response_pair_and_alignkit_round_trip(data_dir, tmp_path):
    pairs, _ = load_pairs(str(data_dir / "pku_saferlhf_safer_pairs.json"), "PROMPT_RESPONSE_PAIR", max_rows=5)
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p.to_json()) + "\n" for p in pairs))
    again, _ = load_pairs(str(path), "ALIGNKIT")
    assert [(p.prompt, p.better, p.worse) for p in again] == [(p.prompt, p.better, p.worse) for p in pairs]


def test_split_by_prompt_never_shares_a_question(homework_pairs):
    train, test = split_by_prompt(homework_pairs, 0.2, seed=1)
    assert len(train) + len(test) == len(homework_pairs)
    assert not {p.prompt_id for p in train} & {p.prompt_id for p in test}
    assert split_by_prompt(homework_pairs, 0.2, seed=1)[1] == test  # seeded
    assert 0.15 < len(test) / len(homework_pairs) < 0.25


def test_seeded_sample_is_a_seeded_subset_and_all_when_not_smaller():
    items = list(range(50))
    sample = seeded_sample(items, 10, seed=3)
    assert len(set(sample)) == 10 and set(sample) <= set(items)
    assert seeded_sample(items, 10, seed=3) == sample and seeded_sample(items, 10, seed=4) != sample
    assert seeded_sample(items, None, 3) is items and seeded_sample(items, 50, 3) is items
    assert seeded_sample(items, 80, 3) is items


@pytest.mark.parametrize("option", ["data.train.max_pairs", "dpo.max_pairs"])
def test_non_positive_sample_size_is_refused_by_name(option):
    from alignkit.config import load_config
    with pytest.raises(AlignkitError, match=f"{option} must be a positive number"):
        load_config("tiny", {option: 0})


# ----------------------------------------------------------------------------- bad input

def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


GOOD = {"question": "q?", "response_1": "a", "response_2": "b", "overall_response": 1}


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = _write(tmp_path, "d.jsonl", json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(DataError, match=r"d\.jsonl, row 2: malformed JSON"):
        load_pairs(path, "HOMEWORK")


@pytest.mark.parametrize("change, field", [
    ({"response_2": None}, "response_2"),
    ({"overall_response": 3}, "overall_response"),
    ({"overall_response": "first"}, "overall_response"),
    ({"question": "   "}, "question"),
    ({"response_1": ""}, "response_1"),
])
def test_bad_row_names_row_and_field(tmp_path, change, field):
    bad = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    path = _write(tmp_path, "d.json", json.dumps([GOOD, GOOD, bad]))
    with pytest.raises(DataError, match=rf"row 3, field '{field}'"):
        load_pairs(path, "HOMEWORK")


def test_unknown_and_empty_template_list_the_known_ones(tmp_path):
    path = _write(tmp_path, "d.json", json.dumps([GOOD]))
    for name in ("PKU", "", None):
        with pytest.raises(AlignkitError, match="unknown template .*HOMEWORK"):
            load_pairs(path, name)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.json.*file not found"):
        load_pairs(str(tmp_path / "nope.json"), "HOMEWORK")


def test_preference_pair_json_round_trip():
    pair = PreferencePair(({"role": "user", "content": "hi"},), "good", "bad", {"k": 1})
    assert PreferencePair.from_json(pair.to_json()) == pair


def test_unreachable_hub_dataset_says_how_to_use_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(AlignkitError, match=r"(?s)'PKU-Alignment/no-such-set'.*--data PATH.*ALIGNKIT_DATA_DIR"):
        load_pairs("PKU-Alignment/no-such-set", "HOMEWORK")


def test_data_dir_env_replaces_the_hub_id(monkeypatch, data_dir, tmp_path):
    from alignkit.data.sources import resolve_source
    monkeypatch.setenv("ALIGNKIT_DATA_DIR", str(data_dir))
    assert resolve_source("PKU-Alignment/align-anything", "align_anything_t2t.json") == \
        str(data_dir / "align_anything_t2t.json")
    monkeypatch.setenv("ALIGNKIT_DATA_DIR", str(tmp_path))
    with pytest.raises(AlignkitError, match="has no align_anything_t2t.json"):
        resolve_source("PKU-Alignment/align-anything", "align_anything_t2t.json")


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_utf8_bom_and_crlf_line_ends_are_read(tmp_path, suffix):
    rows = [GOOD, {**GOOD, "question": "naïve café?", "overall_response": "2"}]
    text = ("\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n" if suffix == ".jsonl"
            else json.dumps(rows, ensure_ascii=False, indent=1).replace("\n", "\r\n"))
    path = tmp_path / f"windows{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    pairs, report = load_pairs(str(path), "HOMEWORK")
    assert report.rows == 2 and pairs[1].prompt[0]["content"] == "naïve café?" and pairs[1].better == "b"


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_latin1_file_is_named_with_line_and_encoding(tmp_path, suffix):
    rows = [GOOD, GOOD, {**GOOD, "question": "café?"}]
    text = ("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) if suffix == ".jsonl"
            else "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]")
    path = tmp_path / f"latin{suffix}"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match=rf"latin{suffix}.*not UTF-8.*0xe9 at line {3 if suffix == '.jsonl' else 4}"):
        load_pairs(str(path), "HOMEWORK")


def test_row_of_another_template_names_the_templates_it_fits(tmp_path):
    pku = {"prompt": "q?", "response_0": "a", "response_1": "b", "better_response_id": 1, "safer_response_id": 0}
    path = _write(tmp_path, "d.json", json.dumps([pku]))
    with pytest.raises(DataError, match=r"field 'response_2'.*fits template PKUSafeRLHF or PKUSafeRLHF-safer"):
        load_pairs(path, "HOMEWORK")
    path = _write(tmp_path, "e.json", json.dumps([{"text": "hello"}]))
    with pytest.raises(DataError, match="fits no registered template"):
        load_pairs(path, "HOMEWORK")


def test_cli_exits_2_naming_a_file_that_is_not_utf8(tmp_path, capsys):
    from alignkit.cli import main
    path = tmp_path / "d.json"
    path.write_bytes(json.dumps([{**GOOD, "question": "caf\xe9"}], ensure_ascii=False).encode("latin-1"))
    assert main(["score", "--model", "smollm2", "--data", str(path), "--template", "HOMEWORK",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "d.json" in err and "not UTF-8" in err and "Traceback" not in err
