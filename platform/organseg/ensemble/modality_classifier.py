"""The modality classifier: CT / MR-T1-in / MR-T1-out / MR-T2SPIR from the image, for volumes whose
headers cannot say what they are (the role SUMNet's auxiliary classifier C1 plays in the seeds).

It is trained with the ensemble on the slice cache's per-series features
(:mod:`organseg.preprocess.modality_features`) and validated by patient-grouped k-fold
cross-validation over all the cache's series: each patient's series are held out together, every
series is predicted by a classifier that never saw its patient, and those out-of-fold predictions give
the held-out accuracy per modality and fit the temperature. The classifier that ships is then fitted on
all series; it is stored in the model directory as ``modality_classifier.json``. The ensemble's own
train/validation split is not used here: it holds out too few patients (2 per kind on CHAOS at the
default ``val_fraction``) to validate four modalities. The router asks it only when
neither headers, a request field nor the file's own record decide, and only when it was validated
(:meth:`ModalityClassifier.validation_problem`); below the configured confidence it refuses.

The fit is scikit-learn's :class:`~sklearn.linear_model.LogisticRegression` (multinomial, L2). The
model directory stores its coefficients as JSON, not a pickle: every number stays inspectable, and a
pickle is tied to one scikit-learn version and unsafe to load. Calibration is one temperature on the
out-of-fold logits rather than :class:`~sklearn.calibration.CalibratedClassifierCV`: its sigmoid and
isotonic methods fit one-vs-rest maps per class, more parameters than the 4–20 held-out series per
modality support, and its temperature method may sharpen (T < 1) and scores folds without the range
guard below, while a bounded temperature only softens and never changes which modality is named.
The folds are the project's one patient-grouped k-fold (:func:`organseg.preprocess.splits.grouped_folds`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression

from organseg.errors import ModelError
from organseg.io.atomic import write_text_atomic
from organseg.io.volume import Modality, Volume
from organseg.preprocess.modality_features import FEATURE_NAMES, FEATURES_VERSION, series_features
from organseg.preprocess.splits import grouped_folds

FILE_NAME = "modality_classifier.json"
KIND = "modality-classifier"
#: The four CHAOS modalities: a classifier that never saw one of them would file it under another.
REQUIRED_CLASSES = (Modality.CT, Modality.MR_T1_IN, Modality.MR_T1_OUT, Modality.MR_T2SPIR)
#: L2 penalty (a Gaussian prior of unit variance on the standardised weights): the fit must earn its
#: confidence series by series; unpenalised, a fit on a handful of separable series says 1.0 to anything.
L2 = 1.0
#: Temperatures tried on the held-out series: never below 1 (calibration may soften, never sharpen).
TEMPERATURE_RANGE = (1.0, 20.0)
#: Cross-validation folds (leave-one-patient-out when there are fewer patients).
FOLDS = 5


@dataclass
class ModalityGuess:
    """The classifier's answer for one volume; ``modality`` is UNKNOWN when it declines."""

    modality: Modality
    confidence: float
    evidence: str
    probabilities: dict[str, float] = field(default_factory=dict)


@dataclass
class HeldOut:
    """Accuracy on held-out patients' series: ``per_class[m] = (correct, series)``. ``folds`` and
    ``patients`` describe the patient-grouped cross-validation that produced it (0: an older model
    validated on the ensemble's validation split)."""

    per_class: dict[str, tuple[int, int]]
    folds: int = 0
    patients: int = 0

    @property
    def method(self) -> str:
        if self.folds:
            return (
                f"patient-grouped {self.folds}-fold cross-validation over {self.patients} patients"
            )
        return "the ensemble's validation patients"

    @property
    def accuracy_per_class(self) -> dict[str, float]:
        return {c: a / n if n else 0.0 for c, (a, n) in self.per_class.items()}

    @property
    def series(self) -> int:
        return sum(n for _, n in self.per_class.values())

    @property
    def accuracy(self) -> float:
        return sum(c for c, _ in self.per_class.values()) / self.series if self.series else 0.0


@dataclass
class ModalityClassifier:
    """Multinomial logistic regression over standardised :data:`FEATURE_NAMES`, temperature-scaled."""

    classes: list[str]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    #: per class (rows in ``classes`` order): the standardised feature range of its training series;
    #: a volume far outside the range of the class it looks most like is no series we know
    low: np.ndarray
    high: np.ndarray
    temperature: float = 1.0
    held_out: HeldOut | None = None
    training_series: dict[str, int] = field(default_factory=dict)

    # -- fitting ----------------------------------------------------------------------------------
    @classmethod
    def fit(cls, features: np.ndarray, modalities: Sequence[Modality | str]) -> ModalityClassifier:
        """Fit on one feature row per series (see :func:`series_features`)."""
        x = np.asarray(features, dtype=np.float64)
        names = [Modality.parse(m).value for m in modalities]
        classes = sorted(set(names))
        if len(classes) < 2:
            raise ModelError("the modality classifier needs series of at least two modalities")
        y = np.array([classes.index(n) for n in names])
        mean, scale = x.mean(0), x.std(0) + 1e-3
        z = (x - mean) / scale
        k = len(classes)
        # sklearn's objective 0.5·|w|² + C·Σ log-loss is ours (Σ log-loss + 0.5·L2·|w|²) with C = 1/L2;
        # the intercept is not penalised (lbfgs)
        fitted = LogisticRegression(C=1.0 / L2, max_iter=1000, tol=1e-8).fit(z, y)
        if k == 2:  # sklearn's binary fit is one logit; as two softmax columns: (-f/2, +f/2)
            w = np.concatenate([-fitted.coef_.T / 2, fitted.coef_.T / 2], axis=1)
            b = np.array([-fitted.intercept_[0] / 2, fitted.intercept_[0] / 2])
        else:
            w, b = fitted.coef_.T, fitted.intercept_
        counts = {c: int((y == i).sum()) for i, c in enumerate(classes)}
        low = np.stack([z[y == i].min(0) for i in range(k)])
        high = np.stack([z[y == i].max(0) for i in range(k)])
        return cls(classes, mean, scale, w, b, low, high, training_series=counts)

    # -- answering --------------------------------------------------------------------------------
    def _logits(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.weights + self.bias

    def _predict_features(self, row: np.ndarray) -> ModalityGuess:
        logits = self._logits(row[None])[0] / self.temperature
        p = np.exp(logits - logsumexp(logits))
        probabilities = {c: float(v) for c, v in zip(self.classes, p, strict=True)}
        best = max(probabilities, key=probabilities.__getitem__)
        # a softmax is confident far from every training series too: the answer must also look like
        # the series it was learnt from (within its range, widened by two overall standard deviations
        # plus the range itself: a handful of training series spans less than a class really does)
        k = self.classes.index(best)
        z = (row - self.mean) / self.scale
        margin = 2.0 + (self.high[k] - self.low[k])
        outside = (z < self.low[k] - margin) | (z > self.high[k] + margin)
        if outside.any():
            first = FEATURE_NAMES[int(np.flatnonzero(outside)[0])]
            return ModalityGuess(
                Modality.UNKNOWN,
                0.0,
                f"modality classifier: its {first} is unlike any {best} training series",
                probabilities,
            )
        return ModalityGuess(
            Modality.parse(best),
            probabilities[best],
            "modality classifier on intensity features (HU range, fat-water cancellation lines, "
            "intensity distribution)",
            probabilities,
        )

    def predict(self, volume: Volume) -> ModalityGuess:
        array = np.asarray(volume.array)
        if array.size == 0 or float(array.max()) == float(array.min()):
            return ModalityGuess(Modality.UNKNOWN, 0.0, "modality classifier: a constant image")
        return self._predict_features(series_features(array))

    # -- the validation gate ----------------------------------------------------------------------
    def validation_problem(
        self, min_accuracy: float, min_series: int, min_accuracy_per_modality: float = 0.0
    ) -> str | None:
        """Why this classifier may not route volumes, or None when its validation supports it:
        trained on all four modalities, at least ``min_series`` out-of-fold held-out series of each,
        out-of-fold accuracy at least ``min_accuracy`` over all of them and at least
        ``min_accuracy_per_modality`` on each modality's (an overall figure can hide one modality the
        classifier confidently gets wrong)."""
        missing = [m.value for m in REQUIRED_CLASSES if m.value not in self.classes]
        if missing:
            return f"the modality classifier was trained without {', '.join(missing)} series"
        held = self.held_out
        if held is None or held.series == 0:
            return "the modality classifier was not validated on out-of-fold held-out series"
        short = {c: held.per_class.get(c, (0, 0))[1] for c in self.classes}
        short = {c: n for c, n in short.items() if n < min_series}
        if short:
            fewest = min(short, key=short.__getitem__)
            return (
                f"the modality classifier was validated on only {short[fewest]} out-of-fold held-out "
                f"{fewest} series ({held.series} in all; {min_series} per modality needed)"
            )
        if held.accuracy < min_accuracy:
            return (
                f"the modality classifier's out-of-fold held-out accuracy is {held.accuracy:.2f} on "
                f"{held.series} series (below {min_accuracy:.2f})"
            )
        per_class = held.accuracy_per_class
        worst = min(self.classes, key=lambda c: per_class.get(c, 0.0))
        if per_class.get(worst, 0.0) < min_accuracy_per_modality:
            right, series = held.per_class.get(worst, (0, 0))
            return (
                f"the modality classifier's out-of-fold held-out accuracy on {worst} series is "
                f"{per_class.get(worst, 0.0):.2f} ({right} of {series}; below the "
                f"{min_accuracy_per_modality:.2f} required of each modality)"
            )
        return None

    # -- model directory --------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "kind": KIND,
            "features_version": FEATURES_VERSION,
            "features": list(FEATURE_NAMES),
            "classes": self.classes,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "weights": self.weights.tolist(),
            "bias": self.bias.tolist(),
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "temperature": self.temperature,
            "training_series": self.training_series,
            "held_out": None
            if self.held_out is None
            else {
                "accuracy": self.held_out.accuracy,
                "series": self.held_out.series,
                "per_class": {c: list(v) for c, v in self.held_out.per_class.items()},
                "accuracy_per_class": self.held_out.accuracy_per_class,
                "method": self.held_out.method,
                "folds": self.held_out.folds,
                "patients": self.held_out.patients,
            },
        }

    def save(self, model_dir: Path | str) -> Path:
        return write_text_atomic(Path(model_dir) / FILE_NAME, json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, model_dir: Path | str) -> ModalityClassifier | None:
        """The classifier stored in ``model_dir``, or None when the directory has none."""
        path = Path(model_dir) / FILE_NAME
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            if data.get("kind") != KIND or data.get("features_version") != FEATURES_VERSION:
                raise ValueError(
                    f"kind {data.get('kind')!r}, features version {data.get('features_version')} "
                    f"(this organseg reads {KIND!r} version {FEATURES_VERSION}); retrain"
                )
            held = data.get("held_out")
            return cls(
                classes=list(data["classes"]),
                mean=np.asarray(data["mean"], float),
                scale=np.asarray(data["scale"], float),
                weights=np.asarray(data["weights"], float),
                bias=np.asarray(data["bias"], float),
                low=np.asarray(data["low"], float),
                high=np.asarray(data["high"], float),
                temperature=float(data.get("temperature", 1.0)),
                held_out=None
                if held is None
                else HeldOut(
                    {c: (int(a), int(n)) for c, (a, n) in held["per_class"].items()},
                    folds=int(held.get("folds", 0)),
                    patients=int(held.get("patients", 0)),
                ),
                training_series={c: int(n) for c, n in data.get("training_series", {}).items()},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{path}: not a usable modality classifier ({exc})") from None

    def summary(self) -> str:
        """One line for ``organseg train`` and ``organseg models``."""
        held = self.held_out
        if held is None or held.series == 0:
            return "modality classifier: not validated (no held-out series)"
        counts = ", ".join(f"{c} {a}/{n}" for c, (a, n) in held.per_class.items())
        fitted = sum(self.training_series.values())
        return (
            f"modality classifier: out-of-fold held-out accuracy {held.accuracy:.2f} on "
            f"{held.series} series ({counts}; {held.method}), temperature "
            f"{self.temperature:.2f}, final fit on {fitted} series"
        )


@dataclass
class Fold:
    """One cross-validation fold: series indices fitted on and held out (disjoint by patient)."""

    train: np.ndarray
    held_out: np.ndarray


def patient_folds(patients: Sequence[str], kinds: Sequence[str], folds: int = FOLDS) -> list[Fold]:
    """Patient-grouped folds over series: all of a patient's series fall in the same held-out fold.

    The project's one grouped k-fold (:func:`organseg.preprocess.splits.grouped_folds`): patients of each
    ``kind`` (e.g. the modalities they hold) are dealt round-robin, so each fold holds out patients of
    every kind in proportion; with fewer patients than ``folds`` it is leave-one-patient-out.
    """
    k = min(folds, len(set(patients)))
    return [Fold(train, held) for train, held in grouped_folds(patients, kinds, k)]


def cross_validate(
    features: np.ndarray,
    modalities: Sequence[Modality | str],
    patients: Sequence[str],
    folds: int = FOLDS,
) -> tuple[HeldOut, float, list[Fold]]:
    """Out-of-fold accuracy per modality and the temperature fitted on the out-of-fold predictions.

    Each fold's classifier is fitted without the held-out patients' series and answers for them (its
    range guard included): a series counts as right only when that answer is its modality. A fold whose
    training series lack the held-out series' modality gets it wrong, as a model that never saw it
    would. Returns (held-out tally, temperature, the folds used).
    """
    x = np.asarray(features, dtype=np.float64)
    truth = [Modality.parse(m).value for m in modalities]
    kinds = {p: "+".join(sorted({t for q, t in zip(patients, truth, strict=True) if q == p}))
             for p in set(patients)}  # fmt: skip
    split = patient_folds(patients, [kinds[p] for p in patients], folds)
    tally = {t: [0, 0] for t in sorted(set(truth))}
    scored: list[
        tuple[np.ndarray, int]
    ] = []  # (fold logits, index of the truth) for the temperature
    for fold in split:
        train_truth = [truth[i] for i in fold.train]
        model = (
            ModalityClassifier.fit(x[fold.train], train_truth)
            if len(set(train_truth)) > 1
            else None
        )
        for i in fold.held_out:
            tally[truth[i]][1] += 1
            if model is None:
                continue
            tally[truth[i]][0] += int(model._predict_features(x[i]).modality.value == truth[i])
            if truth[i] in model.classes:
                scored.append((model._logits(x[i][None])[0], model.classes.index(truth[i])))
    temperature = 1.0
    if scored:

        def nll(t: float) -> float:
            return float(np.mean([logsumexp(lg / t) - lg[y] / t for lg, y in scored]))

        temperature = float(minimize_scalar(nll, bounds=TEMPERATURE_RANGE, method="bounded").x)
    held = HeldOut(
        {c: (a, n) for c, (a, n) in tally.items()}, folds=len(split), patients=len(kinds)
    )
    return held, temperature, split


def fit_from_cache(records: Sequence, folds: int = FOLDS) -> ModalityClassifier | None:
    """Validate by patient-grouped cross-validation over all the series features stored in the slice
    cache's records (:func:`cross_validate`), then fit the classifier that ships on all of them.

    Returns None when the series hold fewer than two modalities (nothing to tell apart). Series of
    the generic ``MR`` kind are left out: the classifier tells the four :data:`REQUIRED_CLASSES`
    apart, and an MR series of no named sequence is no evidence of any of them.
    """
    x: list[np.ndarray] = []
    y: list[str] = []
    patients: list[str] = []
    classes = {m.value for m in REQUIRED_CLASSES}
    for record in records:
        for modality, values in sorted(record.modality_features.items()):
            if modality not in classes:
                continue
            x.append(np.asarray(values, dtype=np.float64))
            y.append(modality)
            patients.append(str(record.patient))
    if len(set(y)) < 2:
        return None
    features = np.stack(x)
    classifier = ModalityClassifier.fit(features, y)
    if len(set(patients)) > 1:
        classifier.held_out, classifier.temperature, _ = cross_validate(
            features, y, patients, folds
        )
    return classifier
