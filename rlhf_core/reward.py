"""ToyRewardModel: cheap, deterministic rewards on decoded text (the seed's API).

- sentiment:  VADER's compound score (a maintained lexicon + rules), in [-1, 1].
- preference: rewards responses that end on a chosen phrase, with partial credit for using one.
- length:     rewards moderate lengths: 1 at `target_words`, falling linearly to -1.
"""

from __future__ import annotations

from typing import Sequence

import torch

from rlhf_core.config import REWARD_TYPES
from rlhf_kit.errors import UsageError

PREFERRED_ENDINGS = ("thank you", "thanks", "great", "good", "love it", "!")


class ToyRewardModel:
    """Scores a batch of responses.

    Args:
        device: where the reward tensor is put.
        tokenizer: decodes token ids when `compute_reward` gets a tensor instead of strings.
        target_words: the preferred length for the `length` reward.

    Example:
        rm = ToyRewardModel(device="cpu")
        rm.compute_reward(["what a great day", "awful"], reward_type="sentiment")  # tensor([0.6249, -0.4588])
    """

    def __init__(self, device: str = "cpu", tokenizer=None, target_words: int = 8):
        self.device = torch.device(device)
        self.tokenizer = tokenizer
        self.target_words = target_words
        self._vader = None

    def _texts(self, sequences: torch.Tensor | Sequence[str]) -> list[str]:
        if isinstance(sequences, torch.Tensor):
            if self.tokenizer is None:
                raise ValueError("ToyRewardModel needs a tokenizer to score token ids")
            return self.tokenizer.batch_decode(sequences, skip_special_tokens=True)
        return list(sequences)

    def compute_reward(self, sequences: torch.Tensor | Sequence[str], reward_type: str = "sentiment") -> torch.Tensor:
        """Rewards (B,) for B responses, given as strings or token ids (B, N)."""
        if reward_type not in REWARD_TYPES:
            raise UsageError(f"unknown reward_type '{reward_type}'; allowed: {', '.join(REWARD_TYPES)}")
        texts = self._texts(sequences)
        score = {"sentiment": self._sentiment, "preference": self._preference, "length": self._length}[reward_type]
        return torch.tensor([score(t) for t in texts], dtype=torch.float32, device=self.device)

    def _sentiment(self, text: str) -> float:
        if self._vader is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            self._vader = SentimentIntensityAnalyzer()
        return float(self._vader.polarity_scores(text)["compound"])

    @staticmethod
    def _preference(text: str) -> float:
        t = text.strip().lower()
        if any(t.endswith(p) for p in PREFERRED_ENDINGS):
            return 1.0
        return 0.5 if any(p in t for p in PREFERRED_ENDINGS) else 0.0

    def _length(self, text: str) -> float:
        n = len(text.split())
        return 1.0 - 2.0 * min(1.0, abs(n - self.target_words) / self.target_words)
