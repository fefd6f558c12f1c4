"""Label review: out-of-fold predictions for every image, compared with its labels to rank
suspected missing, spurious, mislocated and wrong-class boxes (``obdb review``)."""
from .problems import KINDS, Problem, ReviewThresholds, rank_problems

__all__ = ["KINDS", "Problem", "ReviewThresholds", "rank_problems"]
