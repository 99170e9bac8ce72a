//! The Event Triggers page: the table, the Add/Edit form and the Trigger modal.

use leptos::prelude::*;

use crate::api::ui::{
    list_databases, list_tables, list_triggers, trigger_health, AppError, DeleteTrigger, FireEvent, FireResult, SaveTrigger, SetTriggerEnabled, TriggerForm,
};
use crate::app::{use_project, Modal};
use crate::model::{Source, Trigger, TriggerHealth};

/// What the page shows over the table.
#[derive(Clone)]
enum Dialog {
    None,
    Edit { form: TriggerForm, create: bool },
    Fire(Trigger),
}

#[component]
pub fn EventTriggers() -> impl IntoView {
    let project = use_project();
    let (version, set_version) = signal(0u32);
    let refresh = move || set_version.update(|v| *v += 1);
    let triggers = Resource::new(move || (project.get(), version.get()), |(p, _)| list_triggers(p));
    let health = Resource::new(move || (project.get(), version.get()), |(p, _)| trigger_health(p));
    let dialog = RwSignal::new(Dialog::None);
    let notice = RwSignal::new(None::<String>);
    let toggle = ServerAction::<SetTriggerEnabled>::new();
    let delete = ServerAction::<DeleteTrigger>::new();
    let confirm_delete = RwSignal::new(None::<String>);
    for result in [toggle.value(), delete.value()] {
        Effect::new(move |_| match result.get() {
            Some(Ok(())) => refresh(),
            Some(Err(e)) => notice.set(Some(e.to_string())),
            None => {}
        });
    }
    let add = move |_| {
        let form = TriggerForm {
            source: "custom".into(),
            retries: "3".into(),
            timeout_ms: "5000".into(),
            max_in_flight: crate::model::DEFAULT_MAX_IN_FLIGHT.to_string(),
            enabled: true,
            ..Default::default()
        };
        dialog.set(Dialog::Edit { form, create: true });
    };

    view! {
        <div class="page-head">
            <h1>"Event Triggers"</h1>
            <button class="primary" on:click=add>"Add"</button>
        </div>
        {move || notice.get().map(|msg| view! {
            <div class="notice" role="alert">
                <span>{msg}</span>
                <button class="link" on:click=move |_| notice.set(None)>"Dismiss"</button>
            </div>
        })}
        <Transition fallback=|| view! { <p class="busy">"Loading triggers…"</p> }>
            {move || Suspend::new(async move {
                // The health column is extra: without it the table still shows.
                let healths = health.await.unwrap_or_default();
                match triggers.await {
                    Err(e) => view! { <div class="notice" role="alert">{e.to_string()}</div> }.into_any(),
                    Ok(list) if list.is_empty() => view! {
                        <div class="empty">
                            <p>"An event trigger delivers every event of one type to a webhook URL, with retries, "
                               "timeouts and signatures. Add one, then fire a test event from its Trigger button."</p>
                            <button class="primary" on:click=add>"Add a trigger"</button>
                        </div>
                    }.into_any(),
                    Ok(list) => view! {
                        <div class="table-scroll" role="region" aria-label="Event triggers" tabindex="0"><table class="table triggers">
                            <thead><tr>
                                <th>"Name"</th><th>"Source"</th><th>"Type"</th><th>"Webhook URL"</th>
                                <th>"Retries"</th><th>"Timeout"</th><th>"Last hour"</th><th>"Enabled"</th><th>"Actions"</th>
                            </tr></thead>
                            <tbody>
                                {list.into_iter().map(|t| {
                                    let name = t.name.clone();
                                    let (n1, n2, n3) = (name.clone(), name.clone(), name.clone());
                                    let fire = t.clone();
                                    let edit = t.clone();
                                    view! {
                                        <tr data-trigger=name.clone()>
                                            <td>{t.name.clone()}</td>
                                            <td>{t.source.as_str()}</td>
                                            <td><code>{t.event_type.clone()}</code></td>
                                            <td class="url">{t.url.clone()}</td>
                                            <td>{t.retries}</td>
                                            <td>{format!("{} ms", t.timeout_ms)}</td>
                                            <td class="health">
                                                {t.circuit.open.then(|| view! {
                                                    <span class="badge danger" title=t.circuit.reason.clone().unwrap_or_default()>"Circuit open"</span>
                                                    <small class="why">{t.circuit.reason.clone().unwrap_or_default()}</small>
                                                })}
                                                {t.disabled_reason.clone().map(|why| view! { <small class="why">{why}</small> })}
                                                {healths.iter().find(|h| h.trigger == t.name).cloned().map(health_line)}
                                            </td>
                                            <td>
                                                <button class="switch" role="switch" aria-checked=t.enabled.to_string()
                                                    aria-label=format!("Enabled: {}", t.name)
                                                    on:click=move |_| { toggle.dispatch(SetTriggerEnabled {
                                                        project: project.get_untracked(), name: n1.clone(), enabled: !t.enabled }); }>
                                                    {if t.enabled { "On" } else { "Off" }}
                                                </button>
                                            </td>
                                            <td class="actions">
                                                <button disabled=t.source != Source::Custom
                                                    title=if t.source == Source::Custom { "Fire a test event" } else { "Fires on real database or file changes" }
                                                    on:click=move |_| dialog.set(Dialog::Fire(fire.clone()))>"Trigger"</button>
                                                <button on:click=move |_| dialog.set(Dialog::Edit { form: form_of(&edit), create: false })>"Edit"</button>
                                                {move || if confirm_delete.get().as_deref() == Some(n2.as_str()) {
                                                    let n = n3.clone();
                                                    view! {
                                                        <button class="danger" on:click=move |_| {
                                                            confirm_delete.set(None);
                                                            delete.dispatch(DeleteTrigger { project: project.get_untracked(), name: n.clone() });
                                                        }>"Confirm delete"</button>
                                                        <button class="link" on:click=move |_| confirm_delete.set(None)>"Keep"</button>
                                                    }.into_any()
                                                } else {
                                                    let n = n2.clone();
                                                    view! { <button on:click=move |_| confirm_delete.set(Some(n.clone()))>"Delete"</button> }.into_any()
                                                }}
                                            </td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table></div>
                    }.into_any(),
                }
            })}
        </Transition>
        {move || match dialog.get() {
            Dialog::None => ().into_any(),
            Dialog::Edit { form, create } => view! {
                <TriggerFormDialog form create on_done=move |saved| {
                    dialog.set(Dialog::None);
                    if saved { refresh(); }
                }/>
            }.into_any(),
            Dialog::Fire(t) => view! { <FireDialog trigger=t on_close=move || dialog.set(Dialog::None)/> }.into_any(),
        }}
    }
}

/// "1,204 · 99.8 % ok · p95 ≤ 50 ms", or "No deliveries".
fn health_line(h: TriggerHealth) -> impl IntoView {
    let text = if h.attempts == 0 {
        "No deliveries".to_string()
    } else {
        let rate = h.succeeded as f64 * 100.0 / h.attempts as f64;
        let p95 = match h.p95_ms {
            Some(ms) if ms >= i32::MAX as i64 => " · p95 > 60 s".to_string(),
            Some(ms) => format!(" · p95 ≤ {ms} ms"),
            None => String::new(),
        };
        format!("{} · {:.1} % ok{p95}", h.attempts, rate)
    };
    view! { <span class="health-line">{text}</span> }
}

fn form_of(t: &Trigger) -> TriggerForm {
    TriggerForm {
        name: t.name.clone(),
        source: t.source.as_str().into(),
        event_type: t.event_type.clone(),
        url: t.url.clone(),
        retries: t.retries.to_string(),
        timeout_ms: t.timeout_ms.to_string(),
        rate_limit: t.rate_limit.map(|r| r.to_string()).unwrap_or_default(),
        max_in_flight: t.max_in_flight.to_string(),
        headers: t.headers.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect(),
        enabled: t.enabled,
        db: option(t, "db"),
        table: option(t, "table"),
        prefix: option(t, "prefix"),
    }
}

fn option(t: &Trigger, key: &str) -> String {
    t.options.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_string()
}

/// The Add/Edit form (seed 001): errors appear next to their field and what was
/// typed stays.
#[component]
fn TriggerFormDialog(form: TriggerForm, create: bool, on_done: impl Fn(bool) + Copy + Send + Sync + 'static) -> impl IntoView {
    let project = use_project();
    let save = ServerAction::<SaveTrigger>::new();
    let form = RwSignal::new(form);
    let error = move || save.value().get().and_then(Result::err);
    let error_for = move |field: &'static str| {
        move || error().filter(|e| e.field() == Some(field)).map(|e| view! { <span class="field-error">{e.to_string()}</span> })
    };
    let general_error = move || error().filter(|e| e.field().is_none()).map(|e| view! { <p class="error" role="alert">{e.to_string()}</p> });
    Effect::new(move |_| {
        if let Some(Ok(_)) = save.value().get() {
            on_done(true);
        }
    });
    // (event type, what the Operation select shows)
    let types_for = |source: &str| -> Vec<(&'static str, &'static str)> {
        match source {
            "database" => vec![("DB_INSERT", "Insert (DB_INSERT)"), ("DB_UPDATE", "Update (DB_UPDATE)"), ("DB_DELETE", "Delete (DB_DELETE)")],
            "file" => vec![("FILE_CREATE", "Create (FILE_CREATE)"), ("FILE_DELETE", "Delete (FILE_DELETE)")],
            _ => vec![],
        }
    };
    let source = move || form.with(|f| f.source.clone());
    let databases = Resource::new(|| (), |_| list_databases());
    let tables = Resource::new(
        move || form.with(|f| (f.source == "database" && !f.db.is_empty()).then(|| f.db.clone())),
        |db| async move {
            match db {
                Some(db) => list_tables(db).await,
                None => Ok(Vec::new()),
            }
        },
    );
    let chosen_table = move || {
        let name = form.with(|f| f.table.clone());
        tables.get().and_then(Result::ok).and_then(|list| list.into_iter().find(|t| t.name == name))
    };
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        save.dispatch(SaveTrigger { project: project.get_untracked(), form: form.get_untracked(), create });
    };
    macro_rules! text_input {
        ($field:ident, $name:literal) => {
            view! {
                <input name=$name prop:value=move || form.with(|f| f.$field.clone())
                    on:input=move |ev| form.update(|f| f.$field = event_target_value(&ev))/>
            }
        };
    }
    let title = if create { "Add event trigger" } else { "Edit event trigger" };
    view! {
        <Modal title=title id="trigger-form-title" on_close=move || on_done(false)>
            <form on:submit=submit aria-label="Trigger form">
                <label>"Trigger Name"
                    <input name="name" prop:value=move || form.with(|f| f.name.clone()) disabled=!create
                        on:input=move |ev| form.update(|f| f.name = event_target_value(&ev))/>
                    {error_for("name")}
                </label>
                <label>"Source"
                    <select name="source" prop:value=move || form.with(|f| f.source.clone())
                        on:change=move |ev| form.update(|f| {
                            f.source = event_target_value(&ev);
                            if let Some(first) = types_for(&f.source).first() { f.event_type = first.0.to_string(); }
                            if f.source == "database" && f.db.is_empty() { f.db = "default".into(); }
                        })>
                        <option value="custom">"Custom"</option>
                        <option value="database">"Database"</option>
                        <option value="file">"File Storage"</option>
                    </select>
                    {error_for("source")}
                </label>
                {move || (source() == "database").then(|| view! {
                    <label>"Database"
                        <select name="db" on:change=move |ev| form.update(|f| { f.db = event_target_value(&ev); f.table.clear(); })>
                            {move || databases.get().and_then(Result::ok).unwrap_or_default().into_iter().map(|alias| {
                                let selected = { let a = alias.clone(); move || form.with(|f| f.db == a) };
                                view! { <option value=alias.clone() selected=selected>{alias.clone()}</option> }
                            }).collect_view()}
                        </select>
                        {error_for("options.db")}
                    </label>
                    <label>"Table"
                        <select name="table" on:change=move |ev| form.update(|f| f.table = event_target_value(&ev))>
                            <option value="" selected=move || form.with(|f| f.table.is_empty())>"Choose a table…"</option>
                            {move || match tables.get() {
                                Some(Ok(list)) => list.into_iter().map(|t| {
                                    let mut label = t.name.clone();
                                    if t.primary_key.is_empty() { label.push_str(" (no primary key)"); }
                                    if !t.can_trigger { label.push_str(" (no permission)"); }
                                    let selected = { let n = t.name.clone(); move || form.with(|f| f.table == n) };
                                    view! { <option value=t.name.clone() selected=selected>{label}</option> }
                                }).collect_view().into_any(),
                                _ => ().into_any(),
                            }}
                        </select>
                        {move || match tables.get() {
                            Some(Err(e)) => Some(view! { <span class="field-error">{e.to_string()}</span> }),
                            _ => None,
                        }}
                        {error_for("options.table")}
                        {move || chosen_table().filter(|t| t.primary_key.is_empty()).map(|_| view! {
                            <span class="field-warning" role="note">
                                "This table has no primary key: its events carry an empty " <code>"find"</code> "."
                            </span>
                        })}
                    </label>
                })}
                <label>{move || if types_for(&source()).is_empty() { "Type" } else { "Operation" }}
                    {move || {
                        let types = types_for(&source());
                        if types.is_empty() {
                            text_input!(event_type, "type").into_any()
                        } else {
                            view! {
                                <select name="type" on:change=move |ev| form.update(|f| f.event_type = event_target_value(&ev))>
                                    {types.into_iter().map(|(t, label)| view! {
                                        <option value=t selected=move || form.with(|f| f.event_type == t)>{label}</option>
                                    }).collect_view()}
                                </select>
                            }.into_any()
                        }
                    }}
                    {error_for("type")}
                </label>
                {move || (source() == "file").then(|| view! {
                    <label>"Folder (optional)"
                        <input name="prefix" placeholder="/invoices" prop:value=move || form.with(|f| f.prefix.clone())
                            on:input=move |ev| form.update(|f| f.prefix = event_target_value(&ev))/>
                        {error_for("options.prefix")}
                    </label>
                })}
                <label>"Webhook URL"
                    {text_input!(url, "url")}
                    {error_for("url")}
                </label>
                <details>
                    <summary>"Advanced settings"</summary>
                    <label>"Retries" {text_input!(retries, "retries")} {error_for("retries")}</label>
                    <label>"Timeout (ms)" {text_input!(timeout_ms, "timeoutMs")} {error_for("timeoutMs")}</label>
                    <label>"Rate limit (deliveries per second, empty for none)"
                        {text_input!(rate_limit, "rateLimit")} {error_for("rateLimit")}</label>
                    <label>"Max in flight (attempts at once, all nodes together)"
                        {text_input!(max_in_flight, "maxInFlight")} {error_for("maxInFlight")}</label>
                    <fieldset>
                        <legend>"Headers"</legend>
                        {move || (0..form.with(|f| f.headers.len())).map(|i| view! {
                            <div class="header-row">
                                <input aria-label="Header name" placeholder="Name"
                                    prop:value=move || form.with(|f| f.headers.get(i).map(|h| h.0.clone()).unwrap_or_default())
                                    on:input=move |ev| form.update(|f| if let Some(h) = f.headers.get_mut(i) { h.0 = event_target_value(&ev) })/>
                                <input aria-label="Header value" placeholder="Value"
                                    prop:value=move || form.with(|f| f.headers.get(i).map(|h| h.1.clone()).unwrap_or_default())
                                    on:input=move |ev| form.update(|f| if let Some(h) = f.headers.get_mut(i) { h.1 = event_target_value(&ev) })/>
                                <button type="button" class="link" on:click=move |_| form.update(|f| { if i < f.headers.len() { f.headers.remove(i); } })>"Remove"</button>
                            </div>
                        }).collect_view()}
                        <button type="button" on:click=move |_| form.update(|f| f.headers.push(Default::default()))>"Add header"</button>
                        {error_for("headers")}
                    </fieldset>
                </details>
                {general_error}
                <div class="buttons">
                    <button type="button" on:click=move |_| on_done(false)>"Cancel"</button>
                    <button class="primary" type="submit" disabled=move || save.pending().get()>
                        {move || if save.pending().get() { "Saving…" } else { "Save" }}
                    </button>
                </div>
            </form>
        </Modal>
    }
}

/// Checks the data editor's text; the error gives the line and column.
fn check_json(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Ok(());
    }
    serde_json::from_str::<serde_json::Value>(text)
        .map(|_| ())
        .map_err(|e| format!("Invalid JSON at line {}, column {}: {e}", e.line(), e.column()))
}

/// The Trigger modal (seeds 001 and 004): fire a test event and see the answer.
#[component]
fn FireDialog(trigger: Trigger, on_close: impl Fn() + Copy + Send + Sync + 'static) -> impl IntoView {
    let project = use_project();
    let fire = ServerAction::<FireEvent>::new();
    let (event_type, set_event_type) = signal(trigger.event_type.clone());
    let (data, set_data) = signal(String::from("{\n  \"foo\": \"bar\"\n}"));
    let (sync, set_sync) = signal(false);
    let json_error = move || check_json(&data.get()).err();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if json_error().is_none() {
            fire.dispatch(FireEvent { project: project.get_untracked(), event_type: event_type.get(), data: data.get(), synchronous: sync.get() });
        }
    };
    view! {
        <Modal title="Trigger event" id="fire-title" on_close=on_close>
            <form on:submit=submit aria-label="Trigger event">
                <label>"Type"
                    <input name="type" prop:value=event_type on:input=move |ev| set_event_type.set(event_target_value(&ev))/>
                </label>
                <label>"Data (JSON)"
                    <textarea name="data" rows="8" spellcheck="false" prop:value=data
                        on:input=move |ev| set_data.set(event_target_value(&ev))></textarea>
                    {move || json_error().map(|e| view! { <span class="field-error">{e}</span> })}
                </label>
                <label class="check">
                    <input type="checkbox" name="synchronous" prop:checked=sync
                        on:change=move |ev| set_sync.set(event_target_checked(&ev))/>
                    "Trigger event synchronously"
                </label>
                {move || fire.value().get().map(|r| view! { <FireAnswer result=r project=project.get_untracked()/> })}
                <div class="buttons">
                    <button type="button" on:click=move |_| on_close()>"Close"</button>
                    <button class="primary" type="submit" disabled=move || fire.pending().get() || json_error().is_some()>
                        {move || if fire.pending().get() { "Triggering…" } else { "Trigger" }}
                    </button>
                </div>
            </form>
        </Modal>
    }
}

#[component]
fn FireAnswer(result: Result<FireResult, AppError>, project: String) -> impl IntoView {
    match result {
        Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
        Ok(r) if !r.synchronous => view! {
            <div class="answer">
                <p>"Queued event " <code class="event-id">{r.event_id.clone()}</code>
                   {format!(" for {} trigger(s). ", r.triggers)}
                   <a href=format!("/p/{project}/logs?event={}", r.event_id)>"See its event logs"</a>
                </p>
            </div>
        }.into_any(),
        Ok(r) => view! {
            <div class="answer">
                {r.error.clone().map(|e| view! { <p class="error">{e}</p> })}
                <p>"Result"</p>
                <pre class="result">{r.result.clone().unwrap_or_else(|| "null".into())}</pre>
                <table class="table small">
                    <thead><tr><th>"Trigger"</th><th>"Status"</th><th>"Status code"</th><th>"Duration"</th></tr></thead>
                    <tbody>
                        {r.deliveries.into_iter().map(|d| view! {
                            <tr>
                                <td>{d.trigger}</td>
                                <td><span class=format!("badge {}", d.status)>{d.status.clone()}</span></td>
                                <td>{d.status_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into())}</td>
                                <td>{d.duration_ms.map(|m| format!("{m} ms")).unwrap_or_else(|| "-".into())}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        }.into_any(),
    }
}
