//! The Event Logs page (the delivery history dashboard) and the event log detail.

use chrono::{DateTime, Utc};
use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_params_map, use_query_map};

use crate::api::ui::{get_log_detail, list_logs, log_summary, CancelLog, LogFilters, RedeliverLog};
use crate::app::use_project;
use crate::model::{EventLog, Status, Summary};

/// UTC, from the data: the same text on the server and in the browser.
fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// "3 min ago" / "in 2 h", relative to the server's clock at load time.
fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let (n, ahead) = (secs.unsigned_abs(), secs < 0);
    let text = match n {
        0..=59 => format!("{n} s"),
        60..=3599 => format!("{} min", n / 60),
        3600..=86_399 => format!("{} h", n / 3600),
        _ => format!("{} d", n / 86_400),
    };
    if ahead { format!("in {text}") } else { format!("{text} ago") }
}

#[component]
fn When(t: DateTime<Utc>, now: DateTime<Utc>) -> impl IntoView {
    view! { <span title=relative(t, now)>{utc(t)}<small class="muted">" · " {relative(t, now)}</small></span> }
}

#[component]
pub fn EventLogs() -> impl IntoView {
    let project = use_project();
    let query = use_query_map();
    let navigate = use_navigate();
    let param = move |k: &str| query.read().get(k).unwrap_or_default();
    let window = move || param("window").parse::<i64>().unwrap_or(24);
    let filters = move || LogFilters {
        status: param("status"),
        trigger: param("trigger"),
        event_type: param("type"),
        event: param("event"),
        from: param("from"),
        to: param("to"),
        cursor: String::new(),
    };
    let (tick, set_tick) = signal(0u32);
    // Live updates move these: the counts and chart always, the list only when
    // it shows its first page and has no keyboard focus (a refetch redraws it).
    let counts_tick = RwSignal::new(0u32);
    let list_tick = RwSignal::new(0u32);
    let summary =
        Resource::new(move || (project.get(), window(), tick.get(), counts_tick.get()), |(p, w, _, _)| log_summary(p, w));
    let first_page =
        Resource::new(move || (project.get(), filters(), tick.get(), list_tick.get()), |(p, f, _, _)| list_logs(p, f));
    // Pages loaded with "Load more", after the first.
    let more = RwSignal::new(Vec::<EventLog>::new());
    let cursor = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        if let Some(Ok(page)) = first_page.get() {
            more.set(vec![]);
            cursor.set(page.next_cursor.clone());
        }
    });
    let load_more = move |_| {
        let Some(c) = cursor.get_untracked() else { return };
        let f = LogFilters { cursor: c, ..filters() };
        let p = project.get_untracked();
        leptos::task::spawn_local(async move {
            if let Ok(page) = list_logs(p, f).await {
                more.update(|m| m.extend(page.items));
                cursor.set(page.next_cursor);
            }
        });
    };
    let (live, set_live) = signal(true);
    let live_state = RwSignal::new("");
    Effect::new(move |_| {
        let on = live.get();
        let project = project.get();
        #[cfg(feature = "hydrate")]
        if on {
            let changed = move || {
                counts_tick.update(|t| *t += 1);
                if more.with_untracked(Vec::is_empty) && !focus_in("table.logs") {
                    list_tick.update(|t| *t += 1);
                }
            };
            if let Some(source) = listen(&format!("/live/{project}"), changed, live_state) {
                on_cleanup(move || source.take().close());
            }
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (on, project, counts_tick, list_tick, live_state);
        if !on {
            live_state.set("");
        }
    });
    // Filters live in the URL, so that a view can be shared.
    let set_param = move |key: &'static str, value: String| {
        let mut q = query.get_untracked();
        if value.is_empty() { q.remove(key); } else { q.replace(key, value); }
        navigate(&format!("/p/{}/logs{}", project.get_untracked(), q.to_query_string()), Default::default());
    };
    let set_param = StoredValue::new(set_param);
    let input = move |key: &'static str, label: &'static str| view! {
        <label>{label}
            <input name=key prop:value=move || param(key)
                on:change=move |ev| set_param.with_value(|f| f(key, event_target_value(&ev)))/>
        </label>
    };

    // A typed time (RFC 3339, or a date and time taken as UTC) and a picker that fills it.
    let time_input = move |key: &'static str, label: &'static str| view! {
        <div class="time-filter">
            <label>{format!("{label} (UTC)")}
                <input name=key placeholder="2026-01-31T12:00:00Z" prop:value=move || param(key)
                    on:change=move |ev| set_param.with_value(|f| f(key, event_target_value(&ev)))/>
            </label>
            <input type="datetime-local" step="1" class="picker" aria-label=format!("Pick the {} date and time (UTC)", label.to_lowercase())
                prop:value=move || picker_value(&param(key))
                on:change=move |ev| set_param.with_value(|f| f(key, from_picker(&event_target_value(&ev))))/>
        </div>
    };
    view! {
        <div class="page-head">
            <h1>"Event Logs"</h1>
            <div class="tools">
                <label class="check"><input type="checkbox" prop:checked=live
                    on:change=move |ev| set_live.set(event_target_checked(&ev))/>"Live updates"</label>
                <span class="live-state" role="status">{move || live_state.get()}</span>
                <button on:click=move |_| set_tick.update(|t| *t += 1)>"Refresh"</button>
            </div>
        </div>
        <div class="windows" role="group" aria-label="Window">
            {[(1, "1 h"), (24, "24 h"), (168, "7 days"), (720, "30 days")].into_iter().map(|(h, label)| view! {
                <button class:active=move || window() == h aria-pressed=move || (window() == h).to_string()
                    on:click=move |_| set_param.with_value(|f| f("window", h.to_string()))>{label}</button>
            }).collect_view()}
        </div>
        <Transition fallback=|| view! { <p class="busy">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match summary.await {
                    Ok(s) => view! { <Cards summary=s.clone()/><Chart summary=s/> }.into_any(),
                    Err(e) => view! { <div class="notice" role="alert">{e.to_string()}</div> }.into_any(),
                }
            })}
        </Transition>
        <form class="filters" on:submit=|ev| ev.prevent_default()>
            <label>"Status"
                <select name="status" prop:value=move || param("status")
                    on:change=move |ev| set_param.with_value(|f| f("status", event_target_value(&ev)))>
                    <option value="">"Any"</option>
                    {Status::ALL.into_iter().map(|s| view! { <option value=s.as_str()>{s.as_str()}</option> }).collect_view()}
                </select>
            </label>
            {input("trigger", "Trigger")}
            {input("type", "Type")}
            {input("event", "Event ID")}
            {time_input("from", "From")}
            {time_input("to", "To")}
        </form>
        <Transition fallback=|| view! { <p class="busy">"Loading…"</p> }>
            {move || Suspend::new(async move {
                let now = summary.await.map(|s| s.now).unwrap_or_else(|_| Utc::now());
                match first_page.await {
                    Err(e) => view! { <div class="notice" role="alert">{e.to_string()}</div> }.into_any(),
                    Ok(page) if page.items.is_empty() => view! {
                        <p class="empty">"No event logs match. Queue an event, or widen the filters."</p>
                    }.into_any(),
                    Ok(page) => view! {
                        <div class="table-scroll" role="region" aria-label="Event logs" tabindex="0"><table class="table logs">
                            <thead><tr>
                                <th>"Event ID"</th><th>"Trigger"</th><th>"Type"</th><th>"Status"</th>
                                <th>"Attempts"</th><th>"Created"</th><th>"Next attempt"</th>
                            </tr></thead>
                            <tbody>
                                {page.items.into_iter().map(|l| view! { <LogRow log=l now/> }).collect_view()}
                                {move || more.get().into_iter().map(|l| view! { <LogRow log=l now/> }).collect_view()}
                            </tbody>
                        </table></div>
                    }.into_any(),
                }
            })}
        </Transition>
        {move || cursor.get().map(|_| view! { <button class="load-more" on:click=load_more>"Load more"</button> })}
    }
}

#[component]
fn LogRow(log: EventLog, now: DateTime<Utc>) -> impl IntoView {
    let project = use_project();
    let href = format!("/p/{}/logs/{}", project.get_untracked(), log.id);
    let navigate = use_navigate();
    let open = {
        let href = href.clone();
        // A click anywhere on the row opens it, unless it was on a link or a
        // button of its own, or selected text.
        move |ev: leptos::ev::MouseEvent| {
            #[cfg(feature = "hydrate")]
            {
                use wasm_bindgen::JsCast;
                let on_control = ev
                    .target()
                    .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                    .and_then(|el| el.closest("a, button").ok().flatten())
                    .is_some();
                let selecting = window().get_selection().ok().flatten().is_some_and(|s| !s.is_collapsed());
                if !on_control && !selecting {
                    navigate(&href, Default::default());
                }
            }
            #[cfg(not(feature = "hydrate"))]
            let _ = (ev, &navigate, &href);
        }
    };
    let event_id = log.event_id.to_string();
    view! {
        <tr data-log=log.id.to_string() class="clickable" on:click=open>
            <td class="event-id">
                <a href=href title=event_id.clone()><code>{short_id(&event_id)}</code></a>
                <CopyButton text=event_id/>
            </td>
            <td>{log.trigger.clone()}</td>
            <td><code>{log.event_type.clone()}</code></td>
            <td><span class=format!("badge {}", log.status.as_str())>{log.status.as_str()}</span></td>
            <td>{log.attempts}</td>
            <td><When t=log.created_at now/></td>
            <td>{log.next_attempt_at.map(|t| view! { <When t now/> }.into_any()).unwrap_or_else(|| "-".into_any())}</td>
        </tr>
    }
}

/// The part of a UUIDv7 that tells neighbours apart: its first digits are its
/// time, so two events of the same millisecond share them; the last ones are random.
fn short_id(id: &str) -> String {
    format!("…{}", &id[id.len().saturating_sub(8)..])
}

/// The value a `datetime-local` picker shows for a filter: its UTC date and time.
fn picker_value(filter: &str) -> String {
    DateTime::parse_from_rfc3339(filter)
        .map(|t| t.with_timezone(&Utc).format("%Y-%m-%dT%H:%M:%S").to_string())
        .unwrap_or_default()
}

/// A picked `2026-01-31T12:00` or `2026-01-31T12:00:05`, as RFC 3339 in UTC.
fn from_picker(value: &str) -> String {
    match value.len() {
        0 => String::new(),
        16 => format!("{value}:00Z"),
        _ => format!("{value}Z"),
    }
}

/// Copies `text` to the clipboard and says so.
#[component]
pub fn CopyButton(text: String) -> impl IntoView {
    let (state, set_state) = signal("Copy");
    let label = format!("Copy {text}");
    let copy = move |_| {
        #[cfg(feature = "hydrate")]
        {
            let promise = window().navigator().clipboard().write_text(&text);
            leptos::task::spawn_local(async move {
                let ok = wasm_bindgen_futures::JsFuture::from(promise).await.is_ok();
                set_state.set(if ok { "Copied" } else { "Copy failed" });
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (&text, set_state);
    };
    view! {
        <button type="button" class="copy link" aria-label=label on:click=copy>{state}</button>
        <span class="visually-hidden" aria-live="polite">{move || (state.get() != "Copy").then_some(state.get())}</span>
    }
}

#[component]
fn Cards(summary: Summary) -> impl IntoView {
    view! {
        <div class="cards">
            {summary.counts.into_iter().filter(|(s, _)| *s != Status::Cancelled).map(|(s, n)| view! {
                <div class=format!("card-count {}", s.as_str())>
                    <span class="count" data-status=s.as_str()>{n}</span>
                    <span class="label">{s.as_str()}</span>
                </div>
            }).collect_view()}
        </div>
    }
}

/// Opens a server-sent events stream and calls `changed` on each `history`
/// event; `state` says whether it is connected. The browser reconnects by itself.
#[cfg(feature = "hydrate")]
fn listen(
    url: &str,
    changed: impl Fn() + 'static,
    state: RwSignal<&'static str>,
) -> Option<send_wrapper::SendWrapper<web_sys::EventSource>> {
    use wasm_bindgen::closure::Closure;
    use wasm_bindgen::JsCast;
    let source = web_sys::EventSource::new(url).ok()?;
    let on_history = Closure::<dyn Fn(web_sys::MessageEvent)>::new(move |_| changed());
    let on_ready = Closure::<dyn Fn(web_sys::MessageEvent)>::new(move |_| state.set("Live"));
    let on_error = Closure::<dyn Fn(web_sys::Event)>::new(move |_| state.set("Reconnecting…"));
    let _ = source.add_event_listener_with_callback("history", on_history.as_ref().unchecked_ref());
    let _ = source.add_event_listener_with_callback("ready", on_ready.as_ref().unchecked_ref());
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    // The closures live as long as the page: the source is closed on clean-up,
    // after which they are never called.
    on_history.forget();
    on_ready.forget();
    on_error.forget();
    Some(send_wrapper::SendWrapper::new(source))
}

/// Whether keyboard focus is inside the first element matching `selector`.
#[cfg(feature = "hydrate")]
fn focus_in(selector: &str) -> bool {
    let doc = document();
    match (doc.query_selector(selector).ok().flatten(), doc.active_element()) {
        (Some(el), Some(active)) => el.contains(Some(&active)),
        _ => false,
    }
}

/// Processed and failed deliveries per bucket, as inline SVG, with a time axis
/// and the values of the bar under the pointer (or under keyboard focus).
#[component]
fn Chart(summary: Summary) -> impl IntoView {
    let buckets = summary.buckets;
    let n = buckets.len().max(1);
    let max = buckets.iter().map(|b| b.1 + b.2).max().unwrap_or(0).max(1) as f64;
    let (w, h) = (n as f64 * 20.0, 100.0);
    // Bucket width: the gap between the first two, or the window itself.
    let step = match (buckets.first(), buckets.get(1)) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => chrono::Duration::hours(1),
    };
    let tick_format = if step >= chrono::Duration::hours(1) && (buckets.len() as i64) * step.num_hours() > 48 {
        "%b %-d"
    } else {
        "%H:%M"
    };
    // About six labels, whatever the number of bars.
    let every = n.div_ceil(6).max(1);
    let hover = RwSignal::new(None::<usize>);
    let readout = {
        let buckets = buckets.clone();
        move || match hover.get().and_then(|i| buckets.get(i).map(|b| (i, *b))) {
            Some((_, (start, ok, failed))) => format!(
                "{} – {} UTC: {ok} processed, {failed} failed",
                start.format("%b %-d %H:%M"),
                (start + step).format("%H:%M")
            ),
            None => format!("Point at a bar for its counts · up to {} per bar", max as i64),
        }
    };
    view! {
        <figure class="chart" on:mouseleave=move |_| hover.set(None)>
            <svg viewBox=format!("0 0 {w} {}", h + 18.0) role="img"
                aria-label=format!("Deliveries per {} over the window; the table below lists them", duration_text(step))>
                {buckets.iter().enumerate().map(|(i, (start, ok, failed))| {
                    let x = i as f64 * 20.0 + 2.0;
                    let ok_h = *ok as f64 / max * h;
                    let failed_h = *failed as f64 / max * h;
                    view! {
                        <g class="bar" class:hovered=move || hover.get() == Some(i) on:mouseenter=move |_| hover.set(Some(i))>
                            <title>{format!("{}: {ok} processed, {failed} failed", utc(*start))}</title>
                            // The whole column reacts to the pointer, not only the coloured part.
                            <rect class="hit" x=x - 2.0 y="0" width="20" height=h/>
                            <rect class="ok" x=x y=h - ok_h width="16" height=ok_h/>
                            <rect class="failed" x=x y=h - ok_h - failed_h width="16" height=failed_h/>
                        </g>
                    }
                }).collect_view()}
                <line x1="0" y1=h x2=w y2=h class="axis"/>
                {buckets.iter().enumerate().filter(|(i, _)| i % every == 0).map(|(i, (start, _, _))| {
                    let x = i as f64 * 20.0 + 2.0;
                    view! {
                        <line x1=x y1=h x2=x y2=h + 4.0 class="axis"/>
                        <text x=x y=h + 15.0 class="tick">{start.format(tick_format).to_string()}</text>
                    }
                }).collect_view()}
            </svg>
            <figcaption>
                <span class="legend ok">"processed"</span>" "<span class="legend failed">"failed"</span>
                " · "<span class="readout" aria-live="polite">{readout}</span>
            </figcaption>
        </figure>
    }
}

fn duration_text(d: chrono::Duration) -> String {
    match d.num_minutes() {
        m if m % 1440 == 0 && m > 0 => format!("{} day(s)", m / 1440),
        m if m % 60 == 0 && m > 0 => format!("{} hour(s)", m / 60),
        m => format!("{m} minute(s)"),
    }
}

/// One event log: its data, every attempt, and the Redeliver and Cancel buttons.
#[component]
pub fn LogDetailPage() -> impl IntoView {
    let project = use_project();
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let (tick, set_tick) = signal(0u32);
    let detail = Resource::new(move || (project.get(), id(), tick.get()), |(p, i, _)| get_log_detail(p, i));
    let redeliver = ServerAction::<RedeliverLog>::new();
    let cancel = ServerAction::<CancelLog>::new();
    let notice = RwSignal::new(None::<String>);
    for result in [redeliver.value(), cancel.value()] {
        Effect::new(move |_| match result.get() {
            Some(Ok(())) => set_tick.update(|t| *t += 1),
            Some(Err(e)) => notice.set(Some(e.to_string())),
            None => {}
        });
    }
    view! {
        <p><a href=move || format!("/p/{}/logs", project.get())>"← Event Logs"</a></p>
        {move || notice.get().map(|m| view! {
            <div class="notice" role="alert"><span>{m}</span>
                <button class="link" on:click=move |_| notice.set(None)>"Dismiss"</button></div>
        })}
        <Transition fallback=|| view! { <p class="busy">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Err(e) => view! { <div class="notice" role="alert">{e.to_string()}</div> }.into_any(),
                    Ok(d) => {
                        let now = Utc::now().max(d.log.created_at);
                        let status = d.log.status;
                        view! {
                            <div class="page-head">
                                <h1>"Event log " <code>{d.log.id.to_string()[..8].to_string()}</code></h1>
                                <div class="tools">
                                    <button class="primary" disabled=move || redeliver.pending().get() || status == Status::Processing
                                        on:click=move |_| { redeliver.dispatch(RedeliverLog { project: project.get_untracked(), id: id() }); }>
                                        {move || if redeliver.pending().get() { "Redelivering…" } else { "Redeliver" }}</button>
                                    {matches!(status, Status::Scheduled | Status::Pending).then(|| view! {
                                        <button class="danger" on:click=move |_| { cancel.dispatch(CancelLog { project: project.get_untracked(), id: id() }); }>"Cancel"</button>
                                    })}
                                </div>
                            </div>
                            <dl class="facts">
                                <dt>"Status"</dt><dd><span class=format!("badge {}", status.as_str()) data-status=status.as_str()>{status.as_str()}</span></dd>
                                <dt>"Trigger"</dt><dd>{d.log.trigger.clone()}</dd>
                                <dt>"Type"</dt><dd><code>{d.log.event_type.clone()}</code></dd>
                                <dt>"Event ID"</dt><dd><code>{d.log.event_id.to_string()}</code></dd>
                                <dt>"Attempts"</dt><dd>{d.log.attempts}</dd>
                                <dt>"Created"</dt><dd><When t=d.log.created_at now/></dd>
                                <dt>"Last error"</dt><dd>{d.log.last_error.clone().unwrap_or_else(|| "-".into())}</dd>
                            </dl>
                            <h2>"Data"</h2>
                            <pre class="result">{serde_json::to_string_pretty(&d.data).unwrap_or_default()}</pre>
                            <h2>"Attempts"</h2>
                            {if d.invocations.is_empty() { Some(view! { <p class="empty">"No attempt yet."</p> }) } else { None }}
                            <ol class="timeline">
                                {d.invocations.into_iter().map(|inv| view! {
                                    <li class="attempt">
                                        <p>
                                            <strong>{utc(inv.started_at)}</strong>
                                            " · " <span class="code">{inv.status_code.map(|c| format!("HTTP {c}")).unwrap_or_else(|| "no response".into())}</span>
                                            " · " {format!("{} ms", inv.duration_ms)}
                                        </p>
                                        {inv.error.map(|e| view! { <p class="error">{e}</p> })}
                                        <details><summary>"Request headers"</summary>
                                            <pre>{serde_json::to_string_pretty(&inv.request_headers).unwrap_or_default()}</pre></details>
                                        <details><summary>"Request body"</summary><pre>{inv.request_body}</pre></details>
                                        <details open><summary>"Response body"</summary>
                                            <pre class="response">{inv.response_body.unwrap_or_default()}</pre></details>
                                    </li>
                                }).collect_view()}
                            </ol>
                        }.into_any()
                    }
                }
            })}
        </Transition>
    }
}
