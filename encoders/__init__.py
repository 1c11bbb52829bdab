"""Online encoding models, prequential and held-out scores, drift detection, statistics over
sounds, and their ZeroMQ service."""
from .ceiling import CEILING_FORMULA, noise_ceiling, normalised_score, spearman_brown
from .client import EncoderClient, EncoderError, spawn_service
from .drift import PageHinkley
from .encoding import PrequentialEncoder
from .heldout import bootstrap_r2, pooled_r2
from .hrf import convolved, glover_kernel
from .lags import lagged
from .monitor import Monitor
from .ridge import OnlineRidge
from .scores import PrequentialScore, frame_stats, pearson_from_stats, r2_from_stats
from .service import EncoderService
from .stats import bootstrap_ci, fdr_bh, paired_bootstrap, paired_permutation_test, score

__all__ = ["CEILING_FORMULA", "noise_ceiling", "normalised_score", "spearman_brown", "fdr_bh",
           "EncoderClient", "EncoderError", "spawn_service", "PageHinkley", "PrequentialEncoder",
           "lagged", "convolved", "glover_kernel", "Monitor",
           "OnlineRidge", "PrequentialScore", "frame_stats", "pearson_from_stats", "r2_from_stats",
           "EncoderService", "bootstrap_ci", "paired_bootstrap", "paired_permutation_test", "score",
           "pooled_r2", "bootstrap_r2"]
