"""The Gradio app of `evalkit serve`: tab "Try a model" (the BLIP-2 demo, through evalkit's API) and tab "Runs".

Built with ``gr.Blocks`` as the BLIP-2 Space is (an image, an "Advanced settings" accordion, a chat kept in
state and cleared when the image changes). Everything the tabs compute lives in the modules beside this one;
this file lays out the page and turns errors into a line on it (the server keeps serving). Requests that
run a model wait in one bounded queue, one at a time.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # never phone home; set before gradio is imported

import gradio as gr  # noqa: E402

from evalkit.analysis.report_html import Thumbnails, esc  # noqa: E402
from evalkit.core.errors import EvalkitError  # noqa: E402
from evalkit.demo.bundled import SHAPES_DIR  # noqa: E402
from evalkit.serve import try_model  # noqa: E402
from evalkit.serve.decoding import BEAM, DEFAULT_CAPTION_PROMPT, MODES, SAMPLING, USE_BY_MODE, Controls  # noqa: E402
from evalkit.serve.model_pool import ModelPool  # noqa: E402
from evalkit.serve.runs_folder import SORTS, RunsFolder, most_changed  # noqa: E402
from evalkit.serve.uploads import check_image, fetched_copy, served_copy  # noqa: E402

EXAMPLES = 6  # bundled shapes images offered as examples
MODEL_QUEUE = "model"  # every event that runs a model shares this one-at-a-time queue slot
CSS = ("#sample-view img, #changed-table img {width: 160px; image-rendering: pixelated} "
       "#image img {image-rendering: pixelated}")


def build_app(pool: ModelPool, runs: RunsFolder, max_upload_mb: float, work_dir: Path) -> gr.Blocks:
    """The page; ``work_dir`` holds the copies of images it hands to the browser."""
    examples = [served_copy(p, work_dir / "examples")
                for p in sorted((SHAPES_DIR / "images").glob("*.png"))[:EXAMPLES]]
    with gr.Blocks(title="evalkit serve") as demo:
        gr.Markdown("# evalkit serve\nCaption an image, ask about it or chat with a BLIP-2 model; "
                    "browse the runs in the results folder.")
        with gr.Tabs() as tabs:
            with gr.Tab("Try a model", id="try"):
                image = _try_tab(pool, max_upload_mb, work_dir, examples)
            with gr.Tab("Runs", id="runs") as runs_tab:
                _runs_tab(runs, work_dir, image, tabs, runs_tab, demo)
    return demo


# -- tab 1 --------------------------------------------------------------------------------------


def _try_tab(pool: ModelPool, max_upload_mb: float, work_dir: Path, examples: list[str]) -> gr.Image:
    first = pool.names[0]
    defaults = Controls.of(pool.default_protocol(first, "caption"))
    with gr.Row():
        with gr.Column():
            # image_mode None: the file reaches evalkit as uploaded (evalkit's own RGB rule, as for the CLI)
            image = gr.Image(type="filepath", sources=["upload", "clipboard"], label="Image", elem_id="image",
                             format="png", image_mode=None, height=300)
            with gr.Row():
                url = gr.Textbox(label="or an image URL", placeholder="https://…", elem_id="url", scale=4)
                fetch = gr.Button("Load URL", scale=1, elem_id="load-url")
            gr.Examples(examples=[[e] for e in examples], inputs=[image], label="Examples (bundled shapes images)")
        with gr.Column():
            model = gr.Dropdown(pool.names, value=first, label="Model", elem_id="model")
            mode = gr.Radio(list(MODES), value=MODES[0], label="Mode", elem_id="mode")
            text = gr.Textbox(label="Prompt", value=DEFAULT_CAPTION_PROMPT, visible=False, elem_id="text")
            go = gr.Button("Caption it!", variant="primary", elem_id="go")
            answer = gr.Textbox(label="Answer", interactive=False, elem_id="answer")
            footer = gr.Markdown(elem_id="fingerprint")
            status = gr.Markdown(elem_id="status", elem_classes=["evalkit-status"])
            chatbot = gr.Chatbot(label="Chat", height=220, elem_id="chat")
            clear = gr.Button("Clear", elem_id="clear")
    with gr.Accordion("Advanced settings", open=False):
        gr.Markdown("Defaults: the task protocol of the model's family (the settings of `evalkit caption/ask/chat`).")
        method = gr.Radio([BEAM, SAMPLING], value=defaults.method, label="Decoding", elem_id="method")
        with gr.Row():
            beams = gr.Slider(1, 10, value=defaults.num_beams, step=1, label="Beams", elem_id="beams")
            max_new = gr.Slider(1, 100, value=defaults.max_new_tokens, step=1, label="Max new tokens")
            min_new = gr.Slider(0, 50, value=defaults.min_new_tokens, step=1, label="Min new tokens")
        with gr.Row():
            length = gr.Slider(-1.0, 3.0, value=defaults.length_penalty, step=0.1, label="Length penalty")
            repetition = gr.Slider(1.0, 5.0, value=defaults.repetition_penalty, step=0.1, label="Repetition penalty")
        with gr.Row():
            temperature = gr.Slider(0.05, 2.0, value=defaults.temperature, step=0.05, label="Temperature (sampling)")
            top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="Top p (sampling)")
            seed = gr.Number(value=defaults.seed, precision=0, label="Seed (sampling)")
    controls = [method, beams, max_new, min_new, length, repetition, temperature, top_p, seed]
    history, dropped, messages = gr.State([]), gr.State(0), gr.State([])
    cleared = [chatbot, history, dropped, messages]

    def clear_chat():
        return [], [], 0, []

    def settings_for(name: str, chosen: str):
        use = USE_BY_MODE[chosen]
        text_update = gr.update(visible=chosen != "caption",
                                label="Prompt" if use == "caption" else "Question",
                                value=DEFAULT_CAPTION_PROMPT if chosen == "prompted caption" else "")
        button = {"caption": "Caption it!", "prompted caption": "Caption it!", "ask": "Ask", "chat": "Send"}[chosen]
        return [text_update, gr.update(value=button), *Controls.of(pool.default_protocol(name, use)).values()]

    def respond(image_path, name, chosen, question, *rest, progress=gr.Progress()):
        values, (turns, dropped_before, shown) = rest[:len(controls)], rest[len(controls):]
        try:
            reply = _reply(pool, max_upload_mb, image_path, name, chosen, question, Controls(*values), turns,
                           dropped_before, lambda line: progress(0.2, desc=line))
        except EvalkitError as err:
            return gr.update(), gr.update(), f"error: {err}", gr.update(), turns, dropped_before, shown
        use = USE_BY_MODE[chosen]
        info = (f"{name} · protocol {try_model.task_name(pool, name, use)} `{reply.fingerprint[:12]}` · "
                f"prompt `{reply.prompt!r}`")
        if use != "chat":
            return reply.text, info, "", gr.update(), turns, dropped_before, shown
        turns = [*turns, [question.strip(), reply.text]]
        shown = [*shown, {"role": "user", "content": question.strip()}, {"role": "assistant", "content": reply.text}]
        if reply.notice:
            shown.append({"role": "assistant", "content": reply.notice})
        return reply.text, info, reply.notice, shown, turns, reply.dropped_turns, shown

    def load_url(address: str):
        try:
            return fetched_copy(address, work_dir / "fetched"), ""
        except EvalkitError as err:
            return gr.update(), f"error: {err}"

    for trigger in (image.change, model.change, clear.click):
        trigger(clear_chat, outputs=cleared, queue=False, api_visibility="private")
    model.change(settings_for, [model, mode], [text, go, *controls], queue=False, api_name="settings_for")
    mode.change(settings_for, [model, mode], [text, go, *controls], queue=False, api_visibility="private")
    # preprocess=False: the upload reaches respond as Gradio stored it (in its upload folder) and evalkit's
    # image checks judge it, so a bad file is a line on the page rather than an error inside Gradio
    go.click(respond, [image, model, mode, text, *controls, history, dropped, messages],
             [answer, footer, status, chatbot, history, dropped, messages], api_name="answer", preprocess=False,
             concurrency_limit=1, concurrency_id=MODEL_QUEUE)
    fetch.click(load_url, [url], [image, status], concurrency_limit=1, concurrency_id="fetch",
                api_visibility="private")
    return image


def _reply(pool, max_upload_mb, image, name, chosen, question, controls, turns, dropped_before, announce):
    path = check_image(image.get("path") if isinstance(image, dict) else image, max_upload_mb)
    overrides = controls.overrides()
    if chosen == "caption":
        return try_model.caption(pool, name, path, None, overrides, announce)
    if chosen == "prompted caption":
        return try_model.caption(pool, name, path, question or DEFAULT_CAPTION_PROMPT, overrides, announce)
    if chosen == "ask":
        return try_model.ask(pool, name, path, question, overrides, announce)
    if not question or not question.strip():
        raise EvalkitError("type a question first")
    return try_model.chat(pool, name, path, [tuple(t) for t in turns], dropped_before, question, overrides, announce)


# -- tab 2 --------------------------------------------------------------------------------------


def _runs_tab(runs: RunsFolder, work_dir: Path, image: gr.Image, tabs: gr.Tabs, runs_tab: gr.Tab,
              demo: gr.Blocks) -> None:
    with gr.Row():
        filter_text = gr.Textbox(label="Filter the leaderboard (words in any column)", elem_id="filter", scale=4)
        refresh = gr.Button("Refresh", scale=1, elem_id="refresh")
    leaderboard = gr.Dataframe(label="Leaderboard (evalkit report)", interactive=False, wrap=True,
                               elem_id="leaderboard")
    notes = gr.Markdown(elem_id="notes")
    gr.Markdown("## A run's samples")
    with gr.Row():
        run = gr.Dropdown([], label="Run", elem_id="run", scale=3, allow_custom_value=True)
        sort = gr.Radio(list(SORTS), value=SORTS[0], label="Order", elem_id="sort", scale=2)
    samples = gr.Dataframe(label="Samples (click a row)", interactive=False, wrap=True, elem_id="samples",
                           max_height=360, column_widths=["7%", "15%", "6%", "24%", "28%", "20%"])
    with gr.Row():
        sample = gr.HTML(elem_id="sample", elem_classes=["sample"])
        with gr.Column(scale=0, min_width=220):
            sample_id = gr.Textbox(label="Sample id", elem_id="sample-id")
            ask_about = gr.Button("Ask the model about this image", elem_id="ask-about")
    runs_status = gr.Markdown(elem_id="runs-status", elem_classes=["evalkit-status"])
    gr.Markdown("## Compare two runs (evalkit compare)")
    # run names come back from the browser as any text: RunsFolder.run keeps them inside the results folder
    with gr.Row():
        baseline = gr.Dropdown([], label="Baseline", elem_id="baseline", allow_custom_value=True)
        candidate = gr.Dropdown([], label="Candidate", elem_id="candidate", allow_custom_value=True)
        allow_change = gr.Checkbox(label="allow a protocol change (--allow-protocol-change)", elem_id="allow-change")
        compare = gr.Button("Compare", elem_id="compare")
    comparison = gr.Markdown(elem_id="comparison")
    changed = gr.HTML(elem_id="changed", elem_classes=["thumbs"])

    def reload(words: str, chosen: str | None, base: str | None, cand: str | None):
        try:
            frame, footnotes = runs.leaderboard(words or "")
        except EvalkitError as err:
            frame, footnotes = None, f"error: {err}"
        choices = runs.choices()
        names = [value for _, value in choices]
        keep = chosen if chosen in names else (names[0] if names else None)
        return (frame, footnotes, gr.update(choices=choices, value=keep),
                gr.update(choices=choices, value=base if base in names else None),
                gr.update(choices=choices, value=cand if cand in names else None))

    def show_samples(name: str | None, order: str):
        if not name:
            return None, "", "", ""
        try:
            frame = runs.samples(name, order)
        except EvalkitError as err:
            return None, "", "", f"error: {err}"
        first = str(frame.iloc[0]["id"]) if len(frame) else ""
        return frame, first, _sample_html(runs, name, first) if first else "no samples to show", ""

    def pick(name: str | None, evt: gr.SelectData):
        row = evt.row_value if getattr(evt, "row_value", None) else None
        chosen = str(row[0]) if row else ""
        return chosen, _sample_html(runs, name, chosen) if name and chosen else ""

    def open_in_try(name: str | None, chosen: str):
        try:
            path = runs.sample_image(name, chosen) if name and chosen else None
        except EvalkitError as err:
            return gr.update(), gr.update(), f"error: {err}"
        if path is None:
            return gr.update(), gr.update(), "error: this sample's image file is not on this machine"
        return served_copy(path, work_dir / "samples"), gr.Tabs(selected="try"), ""

    def run_compare(base: str | None, cand: str | None, allow_protocol_change: bool):
        from evalkit.analysis.compare import render_comparison

        if not base or not cand:
            return "choose a baseline and a candidate run", ""
        try:
            result = runs.compare(base, cand, allow_protocol_change)
        except EvalkitError as err:
            return f"error: {err}", ""
        return render_comparison(result), _changed_html(runs, base, cand, most_changed(result))

    listing = [filter_text, run, baseline, candidate]
    listed = [leaderboard, notes, run, baseline, candidate]
    private = dict(queue=False, api_visibility="private")
    for trigger in (refresh.click, runs_tab.select, demo.load, filter_text.submit):
        trigger(reload, listing, listed, **private)
    run.change(show_samples, [run, sort], [samples, sample_id, sample, runs_status], queue=False, api_name="samples")
    sort.change(show_samples, [run, sort], [samples, sample_id, sample, runs_status], **private)
    samples.select(pick, [run], [sample_id, sample], **private)
    sample_id.submit(lambda name, chosen: _sample_html(runs, name, chosen), [run, sample_id], [sample], **private)
    ask_about.click(open_in_try, [run, sample_id], [image, tabs, runs_status], **private)
    compare.click(run_compare, [baseline, candidate, allow_change], [comparison, changed], api_name="compare",
                  concurrency_limit=1, concurrency_id="compare")


def _sample_html(runs: RunsFolder, name: str, sample_id: str) -> str:
    """One sample: its image, question or prompt, references, prediction and score."""
    try:
        run = runs.run(name)
        frame = runs.samples(name, "by id")
        path = runs.sample_image(name, sample_id)
    except EvalkitError as err:
        return f'<p class="evalkit-status">error: {esc(err)}</p>'
    rows = frame[frame["id"] == str(sample_id)]
    if rows.empty:
        return f'<p class="evalkit-status">no sample {esc(sample_id)} in this run</p>'
    row = rows.iloc[0]
    uri = Thumbnails(256).uri(str(path), run.path) if path else None
    picture = f'<img alt="sample {esc(sample_id)}" src="{uri}">' if uri else "<p>(image not on this machine)</p>"
    kind = run.task_kind
    status = "" if row["status"] == "ok" else ' · <b class="evalkit-status">failed</b>'
    return (f'<div id="sample-view">{picture}<p>#{esc(sample_id)} · score {esc(row["score"])}{status}</p>'
            f'<p>question / prompt: {esc(row["question / prompt"])}</p>'
            f'<p>{esc(kind.prediction_label)}: <b>{esc(row["prediction"])}</b></p>'
            f'<p>{esc(kind.references_label)}: {esc(row["references"])}</p></div>')


def _changed_html(runs: RunsFolder, base: str, cand: str, changed: list[dict]) -> str:
    """The samples whose score changed most: image, baseline answer and score, candidate answer and score."""
    if not changed:
        return ""
    run = runs.run(base)
    thumbs = Thumbnails(96)
    rows = []
    for item in changed:
        sample_id = str(item.get("id", ""))
        try:
            path = runs.sample_image(base, sample_id)
        except EvalkitError:
            path = None
        uri = thumbs.uri(str(path), run.path) if path else None
        picture = f'<img alt="{esc(sample_id)}" src="{uri}">' if uri else ""
        rows.append(f"<tr><td>{picture}<br>#{esc(sample_id)}</td>"
                    f"<td>{esc(item.get('baseline', ''))}<br><i>{esc(_score(item.get('baseline_score')))}</i></td>"
                    f"<td>{esc(item.get('candidate', ''))}<br><i>{esc(_score(item.get('candidate_score')))}</i></td>"
                    "</tr>")
    return ('<table id="changed-table"><thead><tr><th>sample</th><th>baseline</th><th>candidate</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _score(value) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "—" if value is None else str(value)


def launch(*, models: list[str], results: Path, host: str, port: int, auth: tuple[str, str] | None, device: str,
           dtype: str | None, queue_size: int, max_upload_mb: float) -> None:
    """Build the page and serve it until interrupted (no share link, no analytics)."""
    pool = ModelPool(models, device=device, dtype=dtype)
    for name in models:  # a bad --model fails now, in one line, not on first use
        pool.default_protocol(name, "caption")
    work_dir = Path(tempfile.mkdtemp(prefix="evalkit-serve-"))
    demo = build_app(pool, RunsFolder(results), max_upload_mb, work_dir)
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    print(f"evalkit serve: http://{host}:{port} · results {Path(results).resolve()} · models "
          f"{', '.join(pool.names)}", flush=True)
    demo.launch(server_name=host, server_port=port, auth=auth, share=False, inbrowser=False, show_error=True,
                allowed_paths=[str(work_dir)], max_file_size=f"{max_upload_mb:g}mb", css=CSS, quiet=True,
                footer_links=[])
