"""gpo: few-shot group preference modelling in JAX (GPO and alternative heads)."""

from gpo.api import AdaptedGroup, GroupPreferenceModel, Prediction, load
from gpo.config import DataConfig, EmbedConfig, RunConfig, TrainConfig
from gpo.data import Group, Question, Survey, load_globalopinionqa, load_opinionqa
from gpo.models import GPOConfig, Head, Points, register_head

__all__ = ["AdaptedGroup", "DataConfig", "EmbedConfig", "GPOConfig", "Group",
           "GroupPreferenceModel", "Head", "Points", "Prediction", "Question", "RunConfig",
           "Survey", "TrainConfig", "load", "load_globalopinionqa", "load_opinionqa",
           "register_head"]
