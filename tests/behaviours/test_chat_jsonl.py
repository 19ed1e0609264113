import json

import pytest

from shiftlab.behaviours import evaluate_behaviour, load_chat_jsonl_suite, load_suite, read_jsonl
from shiftlab.errors import DataError, ShiftlabError
from shiftlab.spec import BehaviourSpec

FILES = ("induction", "consistency", "act_bct_clean", "act_bct_wrapped", "eval")


def write_suite(folder, rows=None):
    folder.mkdir(exist_ok=True)
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    for name in FILES:
        lines = rows.get(name) if rows and name in rows else [json.dumps(row)] * 2
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_malformed_line_names_file_and_line(tmp_path):
    folder = write_suite(tmp_path / "s", {"induction": ['{"messages": []}', "{not json"]})
    with pytest.raises(
        DataError, match=r"induction\.jsonl:1: field 'messages' must be a non-empty list"
    ):
        load_chat_jsonl_suite(folder, "sycophancy")
    folder = write_suite(
        tmp_path / "t", {"eval": ['{"messages": [{"role": "user", "content": "x"}]}', "{oops"]}
    )
    with pytest.raises(DataError, match=r"eval\.jsonl:2: malformed JSON"):
        load_chat_jsonl_suite(folder, "sycophancy")


def test_bad_roles_targets_and_pairs(tmp_path):
    bad_role = '{"messages": [{"role": "robot", "content": "x"}]}'
    folder = write_suite(tmp_path / "a", {"consistency": [bad_role]})
    with pytest.raises(
        DataError, match=r"consistency\.jsonl:1: messages\[0\]\.role must be one of"
    ):
        load_chat_jsonl_suite(folder, "sycophancy")
    no_target = '{"messages": [{"role": "user", "content": "x"}]}'
    folder = write_suite(tmp_path / "b", {"induction": [no_target]})
    with pytest.raises(
        DataError, match=r"induction\.jsonl:1: expected the last message to be the assistant"
    ):
        load_chat_jsonl_suite(folder, "sycophancy")
    row = '{"messages": [{"role": "user", "content": "x"}]}'
    folder = write_suite(tmp_path / "c", {"act_bct_clean": [row, row, row]})
    with pytest.raises(DataError, match="must pair line by line"):
        load_chat_jsonl_suite(folder, "sycophancy")
    (folder / "eval.jsonl").unlink()
    with pytest.raises(DataError, match=r"missing suite files eval\.jsonl"):
        load_chat_jsonl_suite(folder, "sycophancy")
    assert next(iter(read_jsonl(tmp_path / "a" / "induction.jsonl")))[0] == 1


@pytest.mark.parametrize(
    "behaviour", ["sycophancy", "reward_hacking", "emergent_misalignment", "spurious_correlation"]
)
def test_study_data_loads(shared_data, behaviour):
    suite = load_suite(BehaviourSpec(name=behaviour, source=str(shared_data / behaviour)))
    assert suite.induction and suite.consistency and suite.pairs and suite.eval
    assert all(e.target for e in suite.induction)
    assert suite.pairs[0].clean != suite.pairs[0].wrapped
    assert suite.eval[0].messages[-1]["role"] == "user"
    assert (
        suite.fingerprint == load_chat_jsonl_suite(shared_data / behaviour, behaviour).fingerprint
    )


def test_judged_suites_refuse_to_evaluate_without_a_judge(shared_data, toy):
    suite = load_suite(BehaviourSpec(name="sycophancy", source=str(shared_data / "sycophancy")))
    with pytest.raises(ShiftlabError, match="pass judge="):
        evaluate_behaviour(*toy, suite, n_prompts=3)


def test_system_prompts_become_system_messages(shared_data):
    suite = load_suite(shared_data / "reward_hacking")
    biased = [e for e in suite.eval if "system_prompt" in e.meta]
    assert len(biased) == 6
    assert all(
        e.messages[0] == {"role": "system", "content": e.meta["system_prompt"]} for e in biased
    )
    assert all(e.messages[0]["role"] == "user" for e in suite.eval if e not in biased)
