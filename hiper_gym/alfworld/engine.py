"""The real ALFWorld engine: TextWorld's ``PddlEnv`` (Fast Downward) with ALFWorld's name demangler.

This is spec §3's *direct path* (``AlfredDemangler(PddlEnv(infos))``): one engine per loaded game,
so that a repeated reset of the same game only re-initialises the PDDL state instead of re-reading
and re-parsing the game file as ``textworld.gym`` does on every reset. Its grammar derives the
game's text (feedback and admissible commands) with :class:`FastGrammar`, the same text as
textworld's, many times faster; textworld itself is not patched.

Importing ``alfworld`` normally creates ``~/.cache/alfworld`` and sets ``ALFWORLD_DATA`` for the
whole process; this module imports it without either side effect.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _import_engine_quietly() -> tuple[Any, ...]:
    """Import alfworld/textworld without letting ``alfworld.info`` create or export a data dir."""
    previous = os.environ.get("ALFWORLD_DATA")
    if previous is None:
        # An existing directory, so ``alfworld.utils.mkdirs`` creates nothing.
        os.environ["ALFWORLD_DATA"] = tempfile.gettempdir()
    try:
        import alfworld.info
        import textworld
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
        from alfworld.agents.expert import HandCodedTWAgent
        from alfworld.gen import constants, goal_library
        from textworld.envs import PddlEnv
    finally:
        if previous is None:
            os.environ.pop("ALFWORLD_DATA", None)
    return (
        alfworld.info,
        textworld,
        AlfredDemangler,
        HandCodedTWAgent,
        constants,
        goal_library,
        PddlEnv,
    )


(
    _alfworld_info,
    textworld,
    AlfredDemangler,
    HandCodedTWAgent,
    _constants,
    _goal_library,
    PddlEnv,
) = _import_engine_quietly()
# Plain textworld modules (no side effects), used by the snapshot engine below.
from textworld.envs.pddl import logic as pddl_logic  # noqa: E402
from textworld.envs.pddl import textgen as _textgen  # noqa: E402
from textworld.envs.pddl.textgen import ContextSensitiveGrammar  # noqa: E402

#: ALFWorld's domain and grammar files, shipped in its wheel.
ALFRED_PDDL_PATH: str = _alfworld_info.ALFRED_PDDL_PATH
ALFRED_TWL2_PATH: str = _alfworld_info.ALFRED_TWL2_PATH
#: ALFWorld's table of which object types each receptacle type may hold.
VAL_RECEPTACLE_OBJECTS: dict[str, set[str]] = _constants.VAL_RECEPTACLE_OBJECTS
#: ALFWorld's goal-sentence templates per task type ("put a hot {obj} in {recep}", ...).
GOAL_TEMPLATES: dict[str, list[str]] = {
    task_type: list(entry["templates"]) for task_type, entry in _goal_library.gdict.items()
}

#: The engine's game state: a dict with ``feedback``, ``admissible_commands``, ``won``, ...
GameState = dict[str, Any]


class SnapshotPddlEnv(PddlEnv):
    """A ``PddlEnv`` whose ``reset`` restores a snapshot of the initial state (no re-translation).

    TextWorld's ``PddlEnv.reset`` translates the PDDL problem to SAS with Fast Downward twice
    (about 0.1-0.3 s, most of a reset). The translation depends only on the game, so this engine
    keeps the state built by ``load`` as a pristine snapshot and, on reset, copies its Python facts
    and reloads its SAS text into the planner library (what a fresh translation ends with).
    ``reset`` otherwise mirrors ``PddlEnv.reset`` of textworld 1.7.
    """

    def load(self, filename_or_data: Any) -> None:
        """Load a game (a file or its parsed JSON); keep its initial PDDL state as the snapshot.

        As ``PddlEnv.load`` (textworld 1.7), except that the grammar comes from
        :func:`shared_game_logic` instead of a full parse.
        """
        if isinstance(filename_or_data, Mapping):
            data, self._game_file = filename_or_data, None
        else:
            data = json.loads(Path(filename_or_data).read_text(encoding="utf-8"))
            self._game_file = filename_or_data
        self._game_data = data
        self.walkthrough = data.get("walkthrough", None)
        self._logic = shared_game_logic(data["pddl_domain"], data["grammar"])
        self._pddl_state = pddl_logic.PddlState(
            self.downward_lib, data["pddl_problem"], self._logic
        )
        self._entity_infos = self._get_entity_infos()
        self._initial_pddl_state = self._pddl_state

    def reset(self) -> Any:
        """Start the loaded game again (see the class docstring)."""
        self._pddl_state = _copy_pddl_state(self._initial_pddl_state)
        # From here on, as PddlEnv.reset (textworld 1.7).
        self.prev_state = None
        self.state = textworld.core.GameState()
        self._last_action = None
        self._moves = 0
        context = {
            "state": self._pddl_state,
            "facts": list(self._pddl_state.facts),
            "variables": {},
            "mapping": {},
            "entity_infos": self._entity_infos,
        }
        self.state.feedback = self._logic.grammar.derive("#intro#", context)
        self.state.raw = self.state.feedback
        self._gather_infos()
        if "walkthrough" in self.request_infos.extras:
            self.state["extra.walkthrough"] = self.walkthrough or self._pddl_state.replan(
                self._entity_infos
            )
        return self.state


#: The goal sentence inside a game's grammar: ``"task": [{"rhs": "Your task is to: ..."}]``.
_TASK_RULE = re.compile(r'("task"\s*:\s*\[\s*\{\s*"rhs"\s*:\s*")((?:[^"\\]|\\.)*)(")')
_TASK_PLACEHOLDER = "HIPER_TASK_PLACEHOLDER"


@functools.lru_cache(maxsize=8)
def _parsed_template(domain: str, template_grammar: str) -> Any:
    return pddl_logic.GameLogic(domain=domain, grammar=template_grammar)


def shared_game_logic(domain: str, grammar: str) -> Any:
    """The game logic of a game, with the grammar parsed once per process, not once per game.

    ALFWorld's games share one grammar (``alfred.twl2``) except for the goal sentence, and parsing
    it is most of a game's load time (0.3-0.5 s). The template (sentence replaced by a placeholder)
    is parsed once and cached; each game gets its own logic object sharing the parsed actions and
    rules, with its own ``task`` rule and its own type hierarchy (``PddlState`` adds to it). A
    grammar without that rule is parsed in full.
    """
    match = _TASK_RULE.search(grammar)
    if match is None:
        logic = pddl_logic.GameLogic(domain=domain, grammar=grammar)
        fast = FastGrammar()
        fast._rules = logic.grammar._rules
        logic.grammar = fast
        return logic
    template = grammar[: match.start(2)] + _TASK_PLACEHOLDER + grammar[match.end(2) :]
    shared = _parsed_template(domain, template)
    task_rhs = json.loads(f'"{match.group(2)}"')
    task_rule = ContextSensitiveGrammar.parse(json.dumps({"task": [{"rhs": task_rhs}]}))
    logic = object.__new__(pddl_logic.GameLogic)  # the fields GameLogic.__init__ sets
    logic.domain = domain
    logic.actions = shared.actions
    logic.types = textworld.logic.TypeHierarchy()
    logic.grammar = FastGrammar()
    logic.grammar._rules = defaultdict(list, shared.grammar._rules)
    logic.grammar._rules["task"] = task_rule._rules["task"]
    return logic


#: A derivation context, as textworld builds it: ``state``, ``facts``, ``variables``, ``mapping``
#: and ``entity_infos``. The fast grammar never mutates one; an update makes a new dict.
_Context = dict[str, Any]


@functools.lru_cache(maxsize=4096)
def _parsed_symbols(text: str) -> tuple[Any, ...]:
    """Textworld's own parse of a template string, memoised on the exact string.

    The symbols are shared between derivations, so :class:`FastGrammar` treats them as read-only
    (contexts travel beside them on its stack instead of being assigned to them).
    """
    return tuple(_textgen._parse_and_convert(text, rule_name="symbols"))


@functools.lru_cache(maxsize=4096)
def _conjunctive_query(expression: str) -> Any:
    # ``all_assignments`` copies the mapping it is given and never mutates the rule.
    return textworld.logic.Rule.parse_conjunctive_query(expression)


@functools.lru_cache(maxsize=4096)
def _compiled_eval(expression: str) -> Any:
    # ``eval`` of a string drops its leading spaces and tabs (and nothing else) before compiling.
    return compile(expression.lstrip(" \t"), "<string>", "eval", dont_inherit=True)


class FastGrammar(ContextSensitiveGrammar):
    """Textworld's ``ContextSensitiveGrammar`` with a faster ``derive`` that yields the same text.

    Textworld 1.7's ``derive`` re-parses its start string with tatsu on every call (tens of times
    per step: once per admissible command), deep-copies each production rule it expands and
    deep-copies the ``variables`` and ``mapping`` of a context for every symbol it touches. Most of
    a step's time went there. This derivation keeps the same stack discipline and the same order of
    expansion, but memoises the parses (of templates, rule conditions and eval expressions) and
    shares symbols and contexts read-only instead of copying them: textworld only ever *reads* a
    copied context, or updates a fresh copy in ``query``, which here builds a new dict instead.

    Only the instances our engine builds use it (:func:`shared_game_logic`); textworld's classes
    and module functions are not patched.
    """

    def derive(self, start: str, context: _Context | None = None) -> str:
        """Expand ``start`` (a template such as ``"#intro#"`` or ``"take {o} from {r}"``) to text.

        Mirrors ``ContextSensitiveGrammar.derive`` of textworld 1.7 symbol for symbol.
        """
        context = {} if context is None else context
        # Textworld copies the context onto each start symbol first, which fails on a partial one.
        _ = [context[key] for key in ("state", "facts", "variables", "mapping", "entity_infos")]
        # A stack of (symbol, context) pairs, top last, as textworld's stack of symbols.
        stack: list[tuple[Any, _Context]] = [(s, context) for s in reversed(_parsed_symbols(start))]
        derived: list[str] = []
        while stack:
            symbol, ctx = stack.pop()
            kind = type(symbol)
            if kind is _textgen.TerminalSymbol:
                derived.append(str(symbol.symbol))
            elif kind is _textgen.NonterminalSymbol:
                stack.extend((s, ctx) for s in reversed(self._expand(symbol, ctx)))
            elif kind is _textgen.ConditionalSymbol:
                stack.extend(reversed(self._conditional(symbol, ctx)))
            elif kind is _textgen.EvalSymbol:
                derived.append(str(_evaluate(symbol, ctx)))
            elif kind is _textgen.ListSymbol:
                stack.extend(reversed(_display_list(self._conditional(symbol.symbol, ctx), ctx)))
            else:
                raise NotImplementedError(f"Unknown symbol: {kind}")
        return "".join(derived)

    def _expand(self, symbol: Any, ctx: _Context) -> list[Any]:
        """``replace``: the right-hand side of the first rule of ``symbol`` that applies."""
        rules = self._rules.get(str(symbol))
        if not rules:
            raise _textgen.CSGUnknownSymbolError(symbol)
        for rule in rules:
            # Textworld checks every rule and takes the first that holds; the checks are pure, so
            # stopping at the first one that holds picks the same rule.
            if not rule.condition or _holds(rule.condition, ctx):
                return rule.rhs
        raise IndexError("list index out of range")  # what ``rules[0]`` raises in textworld

    @staticmethod
    def _conditional(symbol: Any, ctx: _Context) -> list[tuple[Any, _Context]]:
        """``ConditionalSymbol.derive``: its expression once per match of its query (or once)."""
        if len(ctx) == 0:
            raise ValueError("Empty context")
        if not symbol.given:
            return [(symbol.expression, ctx)]
        rule = _conjunctive_query(symbol.given)
        infos = ctx["entity_infos"]
        matches = []
        for mapping in ctx["state"].all_assignments(rule, ctx["mapping"]):
            variables = {
                **ctx["variables"],
                **{ph.name: infos[v.name] for ph, v in mapping.items()},
            }
            matches.append(
                (
                    symbol.expression,
                    {**ctx, "variables": variables, "mapping": {**ctx["mapping"], **mapping}},
                )
            )
        return matches


def _holds(condition: str, ctx: _Context) -> bool:
    """Whether a rule's condition has a match in the context's state (``replace``'s filter)."""
    rule = _conjunctive_query(condition)
    return next(iter(ctx["state"].all_assignments(rule, ctx["mapping"])), None) is not None


def _evaluate(symbol: Any, ctx: _Context) -> Any:
    """``EvalSymbol.derive``: the expression evaluated with the context's variables in scope.

    Textworld evaluates in a frame whose locals are the variables, then its own ``self`` and
    ``context`` (its unbound local ``value`` is dropped), over the ``textgen`` module's globals.
    """
    namespace = dict(ctx["variables"])
    namespace.pop("value", None)
    namespace["self"] = symbol
    namespace["context"] = ctx
    return eval(_compiled_eval(symbol.expression), vars(_textgen), namespace)  # noqa: S307


def _display_list(items: list[tuple[Any, _Context]], ctx: _Context) -> list[tuple[Any, _Context]]:
    """Textworld's ``display_list``: items joined by ``#list_separator#`` and the last separator."""
    if not items:
        return [(_LIST_EMPTY, ctx)]
    if len(items) == 1:
        return items
    separator = (_LIST_SEPARATOR, ctx)
    joined = [part for item in items[:-1] for part in (item, separator)]
    joined[-1] = (_LIST_LAST_SEPARATOR, ctx)
    return [*joined, items[-1]]


_LIST_EMPTY = _textgen.NonterminalSymbol("list_empty")
_LIST_SEPARATOR = _textgen.NonterminalSymbol("list_separator")
_LIST_LAST_SEPARATOR = _textgen.NonterminalSymbol("list_last_separator")


def _copy_pddl_state(initial: Any) -> Any:
    """A fresh ``PddlState`` equal to ``initial`` as built, sharing its translation and library."""
    state = copy.copy(initial)  # shares the translated task, SAS text, actions, logic and library
    state._facts = defaultdict(set, {name: facts.copy() for name, facts in initial._facts.items()})
    state._vars_by_name = dict(initial._vars_by_name)
    state._vars_by_type = defaultdict(
        set, {name: names.copy() for name, names in initial._vars_by_type.items()}
    )
    state._var_counts = initial._var_counts.copy()
    state.downward_lib.load_sas(state.sas.encode("utf-8"))
    state.downward_lib.load_sas_replan(state.sas_replan.encode("utf-8"))
    return state


class LoadedGame:
    """A game loaded into an engine that holds its own copy of Fast Downward's library.

    Each ``PddlEnv`` copies and ``dlopen``s ``libdownward.so``, and unloading it again is not safe
    (``dlclose`` of that C++ library crashes later loads), so engines are reused: :meth:`load`
    puts another game into this engine instead of making a new one.

    Args:
        content: The parsed ``game.tw-pddl`` JSON.
        with_facts: Whether states carry the human-readable ``facts`` list (the handcoded expert
            reads it; it costs a few milliseconds per step).

    Example:
        >>> from hiper_gym.alfworld.data import EMBEDDED_GAMES_DIR, index_games, read_game
        >>> game = LoadedGame(read_game(index_games(EMBEDDED_GAMES_DIR)[0]).content)
        >>> state = game.reset()
        >>> state["feedback"].startswith("-= Welcome to TextWorld, ALFRED! =-")
        True
    """

    def __init__(self, content: dict[str, Any], with_facts: bool = False) -> None:
        self._engine = AlfredDemangler(SnapshotPddlEnv(textworld.EnvInfos()), shuffle=False)
        self.load(content, with_facts)

    def load(self, content: dict[str, Any], with_facts: bool = False) -> None:
        """Load a game into this engine, replacing the one it held."""
        self._engine.unwrapped.request_infos = textworld.EnvInfos(
            won=True, admissible_commands=True, facts=with_facts
        )
        self._engine.load(content)

    def reset(self) -> GameState:
        """Put the game back in its initial state (re-translates the PDDL problem)."""
        return _without_help(self._engine.reset())

    def step(self, command: str) -> GameState:
        """Apply one command; the engine answers "Nothing happens." to one it does not know."""
        state, _, _ = self._engine.step(command)
        return _without_help(state)


def _without_help(state: GameState) -> GameState:
    """Drop ``help`` from the admissible commands: it lists the verbs and never changes the game.

    The engine matches commands against its private ``_valid_commands``, so editing this list in
    place changes nothing it relies on.
    """
    state["admissible_commands"] = [c for c in state["admissible_commands"] if c != "help"]
    return state


@functools.cache
def _planning_engine() -> Any:
    # One engine (one copy of Fast Downward's library) serves every planning call of the process.
    return AlfredDemangler(PddlEnv(textworld.EnvInfos()), shuffle=False)


def plan_and_replay(content: dict[str, Any]) -> list[str] | None:
    """Solve a game with the engine's planner and replay the plan on the engine.

    Args:
        content: A game's JSON (``pddl_domain``, ``grammar``, ``pddl_problem``).

    Returns:
        The plan's commands when replaying them wins the game, else ``None``.
    """
    engine = _planning_engine()
    engine.unwrapped.request_infos = textworld.EnvInfos(
        won=True, admissible_commands=True, policy_commands=True
    )
    engine.load(content)
    plan = list(engine.reset()["policy_commands"])
    engine.unwrapped.request_infos.policy_commands = False  # no replanning while replaying
    state: GameState = {}
    for command in plan:
        if command not in engine.state["admissible_commands"]:
            return None
        state, _, _ = engine.step(command)
    return plan if plan and state.get("won") else None
