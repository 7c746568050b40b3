"""Runtime control: one command set per process, shared by the HTTP API and the control topic.

`LearnerCommands` and `ProducerCommands` validate a command's arguments, apply it and
answer a JSON-able dict; a malformed request raises RequestError, one the engine cannot
honour its ControlError, so every surface (HTTP, `rtsim.control`, tests) rejects it the
same way and changes nothing (`http_status` maps both to an HTTP code). Every applied change is logged on `rtsim.control` and passed to an
optional `on_change` callback (the orchestrator updates metrics from it).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

import numpy as np
import torch

from learner.engine import ControlError, Engine, UnknownStrategy
from learner.strategies import REGISTRY
from simulator.producer import ReplayProducer

log = logging.getLogger("rtsim.control")

ChangeCallback = Callable[[dict], None]


class RequestError(ValueError):
    """A malformed control request (unknown command, bad arguments, bad HTTP framing)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def http_status(err: RequestError | ControlError) -> int:
    """The HTTP code of a refused request: 400-class as raised, 404 for an unknown
    strategy, 409 for a request the engine's current state refuses."""
    if isinstance(err, RequestError):
        return err.status
    return 404 if isinstance(err, UnknownStrategy) else 409


MAX_K = 1000
DEFAULT_K = 10
POPULAR_FALLBACK = "popular_last_period"


def check_args(command: str, args: object, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> dict:
    """`args` as a dict holding every required key and nothing unknown (else RequestError)."""
    if not isinstance(args, dict):
        raise RequestError(f"{command}: arguments must be a JSON object, got {type(args).__name__}")
    allowed = required + optional
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        allowed_text = ", ".join(allowed) if allowed else "none"
        raise RequestError(f"{command}: unknown argument {unknown[0]!r}; allowed: {allowed_text}")
    missing = [key for key in required if key not in args]
    if missing:
        raise RequestError(f"{command}: missing argument {missing[0]!r}; required: {', '.join(required)}")
    return args


def _string(command: str, key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise RequestError(f"{command}: {key} must be a non-empty string, got {value!r:.100}")
    return value


class _Commands:
    """Dispatch by name with one lock, so commands from HTTP threads and the topic
    listener never interleave; `on_change` runs after the change is made."""

    target = ""

    def __init__(self, on_change: ChangeCallback | None) -> None:
        self.on_change = on_change
        self._lock = threading.Lock()
        self._handlers: dict[str, Callable[[dict], dict]] = {}

    def apply(self, command: str, args: dict) -> dict:
        handler = self._handlers.get(command)
        if handler is None:
            raise RequestError(f"unknown {self.target} command {command!r}; allowed: {', '.join(self._handlers)}")
        with self._lock:
            return handler(args)

    def _changed(self, event: dict) -> None:
        event = {"target": self.target, **event}
        log.info("%s control: %s", self.target, {k: v for k, v in event.items() if k != "state"})
        if self.on_change is None:
            return
        try:
            self.on_change(event)
        except Exception:  # the change is made; a failing observer must not report it as failed
            log.exception("on_change callback failed for %s", event["command"])


class LearnerCommands(_Commands):
    """status, strategies, serve, enable, disable, recommend: over an Engine."""

    target = "learner"

    def __init__(self, engine: Engine, on_change: ChangeCallback | None = None) -> None:
        super().__init__(on_change)
        self.engine = engine
        self._handlers = {
            "status": self._status,
            "strategies": self._strategies,
            "serve": self._serve,
            "enable": self._enable,
            "disable": self._disable,
            "recommend": self._recommend,
        }

    def _status(self, args: dict) -> dict:
        check_args("status", args)
        engine = self.engine
        return {
            "target": self.target,
            **engine.control_state(),
            "started": sorted(engine.strategies),
            "ready": bool(engine.strategies),  # False while pretraining: nothing serves yet
            "periods": len(engine.phases),
            "users": len(engine.user_vocab),
            "items": len(engine.item_vocab),
        }

    def _strategies(self, args: dict) -> dict:
        check_args("strategies", args)
        state = self.engine.control_state()
        pending: dict[str, list[str]] = {}
        for request in state["pending"]:
            pending.setdefault(request["strategy"], []).append(request["action"])
        started = set(self.engine.strategies)
        return {
            "serving": state["serving"],
            "strategies": [
                {
                    "name": name,
                    "enabled": name in state["enabled"],
                    "serving": name == state["serving"],
                    "started": name in started,
                    "pending": pending.get(name, []),
                }
                for name in REGISTRY
            ],
        }

    def _serve(self, args: dict) -> dict:
        name = _string("serve", "strategy", check_args("serve", args, ("strategy",))["strategy"])
        swapped = self.engine.set_serving(name)
        state = self.engine.control_state()
        if swapped:
            self._changed({"command": "serve", "strategy": name, "swaps": state["swaps"], "state": state})
        return {"serving": name, "swapped": swapped, "state": state}

    def _enable(self, args: dict) -> dict:
        args = check_args("enable", args, ("strategy",), ("from_serving",))
        name = _string("enable", "strategy", args["strategy"])
        from_serving = args.get("from_serving", False)
        if not isinstance(from_serving, bool):
            raise RequestError(f"enable: from_serving must be true or false, got {from_serving!r:.100}")
        self.engine.request_enable(name, from_serving=from_serving)
        return self._pending("enable", name, from_serving)

    def _disable(self, args: dict) -> dict:
        name = _string("disable", "strategy", check_args("disable", args, ("strategy",))["strategy"])
        self.engine.request_disable(name)
        return self._pending("disable", name, False)

    def _pending(self, action: str, name: str, from_serving: bool) -> dict:
        state = self.engine.control_state()
        # requests queue until the period being filled closes (Engine's model of control)
        effective = f"when period {state['next_period']} closes"
        self._changed(
            {
                "command": action,
                "strategy": name,
                "from_serving": from_serving,
                "takes_effect": effective,
                "state": state,
            }
        )
        return {
            "strategy": name,
            "action": action,
            "from_serving": from_serving,
            "takes_effect": effective,
            "state": state,
        }

    def _recommend(self, args: dict) -> dict:
        args = check_args("recommend", args, ("user",), ("k",))
        user = _string("recommend", "user", args["user"])
        k = args.get("k", DEFAULT_K)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise RequestError(f"recommend: k must be an integer from 1 to {MAX_K}, got {k!r:.100}")
        engine = self.engine
        serving = engine.serving
        strategy = engine.strategies.get(serving)
        if strategy is None:
            last_pretrain = max(t for t, phase in enumerate(engine.phases) if phase == "pretrain")
            raise ControlError(
                "no model serves yet: the strategies start when pretraining ends, "
                f"as period {last_pretrain} closes; {engine.next_period} of "
                f"{len(engine.phases)} periods closed so far"
            )
        user_emb, item_emb = strategy.serving_embeddings()
        n_items = item_emb.shape[0]  # the table may trail the vocabulary while a period closes
        try:
            code = int(engine.user_vocab.lookup([user])[0])
        except KeyError:
            code = None
        known = np.zeros(0, dtype=np.int64)
        if code is not None:
            _, known = engine.shared.history.user_items(np.array([code], dtype=np.int64))
            known = known[known < n_items]
        if code is None or code >= user_emb.shape[0]:
            items, fallback = self._popular(n_items, known, k), POPULAR_FALLBACK
        else:
            items, fallback = self._top_scored(user_emb[code], item_emb, known, k), None
        ids = engine.item_vocab.ids
        return {"user": user, "k": k, "items": [ids[i] for i in items], "fallback": fallback, "strategy": serving}

    @staticmethod
    def _top_scored(user_row: torch.Tensor, item_emb: torch.Tensor, known: np.ndarray, k: int) -> list[int]:
        with torch.no_grad():
            scores = (item_emb @ user_row).float().cpu()
        if len(known):
            scores[torch.from_numpy(known)] = -math.inf
        eligible = scores.shape[0] - len(np.unique(known))
        return torch.topk(scores, min(k, eligible)).indices.tolist()

    def _popular(self, n_items: int, known: np.ndarray, k: int) -> list[int]:
        """The last closed period's most frequent items (ties: earlier-registered first)."""
        history = self.engine.shared.history
        last = len(history.period_ends) - 1
        _, items = history.period_slice(last, last)
        counts = np.bincount(items[items < n_items], minlength=n_items)
        counts[known] = 0  # a known user's own items are never recommended back
        candidates = np.flatnonzero(counts)
        order = np.lexsort((candidates, -counts[candidates]))
        return candidates[order[:k]].tolist()


class ProducerCommands(_Commands):
    """status, pause, resume, speed: over a ReplayProducer."""

    target = "producer"

    def __init__(self, producer: ReplayProducer, on_change: ChangeCallback | None = None) -> None:
        super().__init__(on_change)
        self.producer = producer
        # every pause/resume goes through this object, so it knows the state the producer
        # keeps private
        self.paused = False
        self._handlers = {"status": self._status, "pause": self._pause, "resume": self._resume, "speed": self._speed}

    def _state(self) -> dict:
        stats = self.producer.stats
        return {
            "target": self.target,
            "run_id": self.producer.run_id,
            "produced": stats.produced,
            "n_events": len(self.producer.log.ts),
            "event_time": stats.event_time,
            "speed": "max" if stats.speed is None else stats.speed,
            "paused": self.paused,
            "done": stats.done,
        }

    def _status(self, args: dict) -> dict:
        check_args("status", args)
        return self._state()

    def _pause(self, args: dict) -> dict:
        check_args("pause", args)
        self.producer.pause()
        if not self.paused:
            self.paused = True
            self._changed({"command": "pause", "state": self._state()})
        return self._state()

    def _resume(self, args: dict) -> dict:
        check_args("resume", args)
        self.producer.resume()
        if self.paused:
            self.paused = False
            self._changed({"command": "resume", "state": self._state()})
        return self._state()

    def _speed(self, args: dict) -> dict:
        speed = check_args("speed", args, ("speed",))["speed"]
        if speed == "max":
            value = None
        elif isinstance(speed, (int, float)) and not isinstance(speed, bool) and math.isfinite(speed) and speed > 0:
            value = float(speed)
        else:
            raise RequestError(
                f'speed: must be a number > 0 (event-time seconds per wall second) or "max", got {speed!r:.100}'
            )
        if value != self.producer.stats.speed:
            self.producer.set_speed(value)
            self._changed({"command": "speed", "speed": "max" if value is None else value, "state": self._state()})
        return self._state()
