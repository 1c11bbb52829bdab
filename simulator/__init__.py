"""The learning network and the run: wav2vec 2.0 and SoundNet learners, brain-aligned
fine-tuning, pretraining, the synthetic cortex, scenarios, runs, results, summaries and the
downstream probe."""
from .brain_tuning import BrainAligner, BrainLearner, TemporalHead
from .cortex import CortexSettings, synthesize
from .learner import MODES, Learner, TrialRecord
from .model import SIZES, build_model, layer_names, load_model
from .modes import BRAIN_MODES, RUN_MODES, build_learner, load_network
from .pretrain import PretrainSettings, load_checkpoint, pretrain
from .probe import linear_probe
from .run import run_scenario
from .run_checkpoint import CheckpointError, RunCheckpoint
from .scenario import Scenario, load_scenario
from .soundnet import SoundNet, build_soundnet, load_soundnet, save_soundnet
from .summary import format_table, summarize

__all__ = ["CortexSettings", "synthesize", "MODES", "Learner", "TrialRecord", "SIZES", "build_model",
           "layer_names", "load_model", "RUN_MODES", "build_learner", "PretrainSettings", "load_checkpoint", "pretrain",
           "run_scenario", "CheckpointError", "RunCheckpoint", "Scenario", "load_scenario", "format_table", "summarize",
           "BrainAligner", "BrainLearner", "TemporalHead", "BRAIN_MODES", "load_network", "linear_probe",
           "SoundNet", "build_soundnet", "load_soundnet", "save_soundnet"]
