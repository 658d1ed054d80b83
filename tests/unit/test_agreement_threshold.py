"""The service's agreement verdict uses the threshold the committed agreement study measured (not a guess)."""

from __future__ import annotations

import json
from pathlib import Path

from model_owner_server.evaluation.agreement import TRANSFER_THRESHOLD, AgreementReport, verdict

STUDY = Path(__file__).resolve().parents[2] / "results" / "agreement-smollm2-135m-n150.json"


def test_the_threshold_is_the_committed_studys() -> None:
    study = json.loads(STUDY.read_text())
    assert study["benchmark"] == "agreement" and study["threshold"]["agreement"] == TRANSFER_THRESHOLD


def test_the_verdict_follows_the_threshold() -> None:
    likely, text = verdict(AgreementReport(n_items=10, agreement=TRANSFER_THRESHOLD, mean_kl=0.1))
    assert likely and "likely to transfer" in text and "unlikely" not in text
    unlikely, text = verdict(AgreementReport(n_items=10, agreement=TRANSFER_THRESHOLD - 0.01, mean_kl=0.1))
    assert not unlikely and "unlikely to transfer" in text and "10 prompts" in text
