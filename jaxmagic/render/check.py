"""Text and HTML for ``CheckReport`` (``%jaxcheck``)."""

from __future__ import annotations

from jaxmagic._format import fmt_seconds, plural
from jaxmagic.render import text as T


def _head(r) -> str:
    return f"jaxcheck of {r.name}({r.signature})"


_PHRASES = {
    "index": "out-of-bounds index",
    "nan": "NaN produced",
    "div": "division by zero",
    "user": "failed checkify.check",
}


def _none_of(checks) -> str:
    """``no out-of-bounds index, NaN produced or division by zero`` for the enabled checks."""
    words = [_PHRASES[c] for c in checks]
    return "no " + (", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0])


def _checks_ran(r) -> str:
    """``index, nan, div, user checks`` plus ``; index skipped`` when some could not run."""
    ran = f"{', '.join(r.checks)} checks" if r.checks else "no check could run"
    return ran + (f"; {', '.join(r.skipped)} skipped" if r.skipped else "")


def _headline(f) -> str:
    same = f.message.lower().rstrip(".") == f.title
    return f.title if same else f"{f.title}: {f.message}"


def check_text(r, *, width: int = 100) -> str:
    """Plain text: a verdict line, then one block per finding with its source line."""
    checks = _checks_ran(r)
    if not r.checks:
        verdict = f"nothing checked ({checks}) · {fmt_seconds(r.seconds)}"
    elif r.clean:
        verdict = f"clean: no errors found ({checks}) · {fmt_seconds(r.seconds)}"
    else:
        verdict = f"{plural(len(r.findings), 'error')} found ({checks}) · {fmt_seconds(r.seconds)}"
    out = [_head(r), verdict]
    for f in r.findings:
        out.append("")
        out.append(T.wrap(_headline(f), width=width, first="✗ ", indent="  "))
        if f.location():
            out.append(f"  at {f.location()}")
        if f.source:
            out.append(f"    {f.source}")
        out.append(T.wrap(f.silent, width=width, indent="  "))
        if f.fix:
            out.append(T.wrap(f"Fix: {f.fix}", width=width, indent="  "))
    out.append("")
    out.append(T.wrap(f"returned: {r.output}", width=width, indent="  "))
    for n in r.notes:
        out.append(T.wrap(f"note: {n}", width=width, indent="  "))
    return "\n".join(out)


def check_html(r) -> str:
    """Self-contained HTML: verdict badge, one insight-style block per finding."""
    from jaxmagic.render import html as H

    return H.document(check_body(r))


def check_body(r) -> str:
    """The report's HTML without the document wrapper (for reports that embed it)."""
    from jaxmagic.render import html as H

    checks = ", ".join(r.checks) + (f"; skipped: {', '.join(r.skipped)}" if r.skipped else "")
    badge = (
        H.badge("nothing checked", "bad")
        if not r.checks
        else H.badge("clean", "ok")
        if r.clean
        else H.badge(plural(len(r.findings), "error"), "bad")
    )
    head = (
        f"<h3>jaxcheck of <code>{H.esc(r.name)}</code> {badge}</h3>"
        f"<div class='jm-muted'><code>({H.esc(r.signature)})</code> · checks: {H.esc(checks)}"
        f" · {H.esc(fmt_seconds(r.seconds))}</div>"
    )
    parts = [head]
    if r.clean:
        parts.append(f"<p class='jm-check-verdict'>No errors found: {H.esc(_none_of(r.checks))}.</p>")
    for f in r.findings:
        where = ""
        if f.location():
            where = f"<div><span class='jm-muted'>at</span> <code>{H.esc(f.location())}</code></div>"
        src = H.pre(f.source, cls="jm-check-src") if f.source else ""
        fix = f"<div><span class='jm-muted'>Fix:</span> {H.esc(f.fix)}</div>" if f.fix else ""
        parts.append(
            f'<div class="jm-insight jm-finding" data-kind="{H.esc(f.kind)}">'
            f"{H.badge(f.title, 'bad')} {H.esc(_headline(f)[len(f.title) + 2 :])}{where}{src}"
            f"<div>{H.esc(f.silent)}</div>{fix}</div>"
        )
    parts.append(f"<div class='jm-muted'>returned: <code>{H.esc(r.output)}</code></div>")
    for n in r.notes:
        parts.append(f"<div class='jm-muted'>note: {H.esc(n)}</div>")
    return "".join(parts)
