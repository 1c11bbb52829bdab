"""The learning network and the run: wav2vec 2.0 learners, pretraining, the synthetic cortex,
scenarios, runs, results and summaries."""
from .cortex import CortexSettings, synthesize
from .learner import MODES, Learner, TrialRecord
from .model import SIZES, build_model, layer_names, load_model
from .modes import RUN_MODES, build_learner
from .pretrain import PretrainSettings, load_checkpoint, pretrain
from .run import run_scenario
from .run_checkpoint import CheckpointError, RunCheckpoint
from .scenario import Scenario, load_scenario
from .summary import format_table, summarize

__all__ = ["CortexSettings", "synthesize", "MODES", "Learner", "TrialRecord", "SIZES", "build_model",
           "layer_names", "load_model", "RUN_MODES", "build_learner", "PretrainSettings", "load_checkpoint", "pretrain",
           "run_scenario", "CheckpointError", "RunCheckpoint", "Scenario", "load_scenario", "format_table", "summarize"]
