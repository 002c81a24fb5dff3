from lit_pref.algorithms.base import PolicyModule
from lit_pref.algorithms.best_of_n import BestOfNFineTune
from lit_pref.algorithms.causal import CausalPO, OutcomeModel
from lit_pref.algorithms.dpo import DPO
from lit_pref.algorithms.irft import IRFT
from lit_pref.algorithms.mpo import MPO
from lit_pref.algorithms.nash_md import NashMD
from lit_pref.algorithms.online import OnlineModule
from lit_pref.algorithms.reward_model import RewardModel
from lit_pref.algorithms.rft import RFT
from lit_pref.algorithms.self_play import SelfPlay
from lit_pref.algorithms.sft import SFT
from lit_pref.algorithms.sppo import SPPO
from lit_pref.algorithms.wspo import WSPO

__all__ = [
    "BestOfNFineTune",
    "DPO",
    "IRFT",
    "MPO",
    "CausalPO",
    "NashMD",
    "OnlineModule",
    "OutcomeModel",
    "PolicyModule",
    "RewardModel",
    "RFT",
    "SelfPlay",
    "SFT",
    "SPPO",
    "WSPO",
]
