"""A real reference profile for the monitor's unit tests: the trainer's own ``train_model`` on synthetic data.

The profile's prediction summary is replaced by the one of a stand-in scorer (scikit-learn's logistic
regression on the numeric features, fitted once on the same training sample), so tests can score live
windows without loading an ONNX model.
"""

from __future__ import annotations

import pytest

from tests.unit.monitor import standin
from tests.unit.monitor.standin import TRAINING_ROWS, TRAINING_SEED, stand_in_scores
from tollgate_core.contracts import DatasetContract
from tollgate_core.reference import ReferenceProfile
from tollgate_demo.datasets import generate_records
from tollgate_monitor.drift import Layout


@pytest.fixture(scope="session")
def contract() -> DatasetContract:
    return standin.contract()


@pytest.fixture(scope="session")
def reference(contract: DatasetContract) -> ReferenceProfile:
    from tollgate_trainer.reference import summarize_numeric
    from tollgate_trainer.train import TrainingConfig, train_model

    records = generate_records(contract, TRAINING_ROWS, seed=TRAINING_SEED)
    result = train_model(contract, records, TrainingConfig(family="logistic_regression", threads=1))
    return result.reference.model_copy(update={"prediction": summarize_numeric(stand_in_scores(records))})


@pytest.fixture(scope="module")
def layout(reference: ReferenceProfile) -> Layout:
    return Layout.from_reference(reference)
