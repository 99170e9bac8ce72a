//! Project settings (API keys, secrets, the curl snippet) and the account page
//! (change password).

use chrono::{DateTime, Utc};
use leptos::prelude::*;

use crate::api::ui::{
    database_grants, list_api_keys, retention_days, ChangePassword, CreateApiKey, ProjectSecrets, RevokeApiKey,
    RotateSecret, SetDatabaseGrant, SetRetention,
};
use crate::app::use_project;

fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The address the browser reached Herald at, for copy-paste snippets. The
/// server renders a placeholder; the browser fills in the real one.
fn use_origin() -> ReadSignal<String> {
    let (origin, set_origin) = signal(String::from("http://127.0.0.1:3000"));
    Effect::new(move |_| {
        #[cfg(feature = "hydrate")]
        if let Ok(o) = window().location().origin() {
            set_origin.set(o);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = set_origin;
    });
    origin
}

#[component]
pub fn ProjectSettings() -> impl IntoView {
    let project = use_project();
    let origin = use_origin();
    view! {
        <div class="page-head"><h1>"Project settings"</h1></div>
        <p class="muted">"Project " <strong>{move || project.get()}</strong></p>
        <section class="panel">
            <h2>"Queue an event"</h2>
            <p class="muted">"With an API key from below (or a JWT signed with the project's JWT secret):"</p>
            <pre class="snippet" aria-label="curl command">{move || format!(
                "curl -X POST {}/v1/api/{}/eventing/queue \\\n  -H \"Authorization: Bearer $HERALD_KEY\" \\\n  -H \"Content-Type: application/json\" \\\n  -d '{{\"type\": \"user.created\", \"data\": {{\"id\": 1}}}}'",
                origin.get(), project.get())}</pre>
        </section>
        <ApiKeys/>
        <Retention/>
        <Secrets/>
        <DatabaseGrants/>
    }
}

/// How long ended history is kept (SPEC §9).
#[component]
fn Retention() -> impl IntoView {
    let project = use_project();
    let save = ServerAction::<SetRetention>::new();
    let current = Resource::new(move || (project.get(), save.version().get()), |(p, _)| retention_days(p));
    let (days, set_days) = signal(String::new());
    Effect::new(move |_| {
        if let Some(Ok(d)) = current.get() {
            set_days.set(d.to_string());
        }
    });
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        save.dispatch(SetRetention { project: project.get_untracked(), days: days.get_untracked() });
    };
    view! {
        <section class="panel" aria-labelledby="retention-title">
            <h2 id="retention-title">"History retention"</h2>
            <p class="muted">"Ended event logs (processed, failed, cancelled) older than this are removed with their \
                attempts. Event logs that have not ended are kept, whatever their age."</p>
            <form class="inline-form" on:submit=submit aria-label="History retention">
                <label>"Keep history for (days)"
                    <input name="retentionDays" type="number" min="1" max="3650" required prop:value=days
                        aria-describedby="retention-error"
                        on:input=move |ev| set_days.set(event_target_value(&ev))/>
                </label>
                <button class="primary" type="submit" disabled=move || save.pending().get()>
                    {move || if save.pending().get() { "Saving…" } else { "Save" }}
                </button>
            </form>
            <div id="retention-error">
                {move || save.value().get().map(|r| match r {
                    Ok(d) => view! { <p class="ok" role="status">{format!("Saved: history is kept for {d} days.")}</p> }.into_any(),
                    Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                })}
            </div>
        </section>
    }
}

/// Which database aliases the project's database triggers may watch (SPEC §8).
#[component]
fn DatabaseGrants() -> impl IntoView {
    let project = use_project();
    let set = ServerAction::<SetDatabaseGrant>::new();
    let grants = Resource::new(move || (project.get(), set.version().get()), |(p, _)| database_grants(p));
    view! {
        <section class="panel" aria-labelledby="grants-title">
            <h2 id="grants-title">"Database grants"</h2>
            <p class="muted">"Database triggers of this project may watch tables only in the databases granted here. \
                Herald's own tables can never be watched."</p>
            {move || set.value().get().and_then(Result::err).map(|e| view! { <p class="error" role="alert">{e.to_string()}</p> })}
            <Transition fallback=|| view! { <p class="busy">"Loading grants…"</p> }>
                {move || Suspend::new(async move {
                    match grants.await {
                        Err(e) => view! { <div class="notice" role="alert">{e.to_string()}</div> }.into_any(),
                        Ok(list) => view! {
                            <table class="table grants">
                                <thead><tr><th>"Database"</th><th>"Access"</th><th>"Actions"</th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|(alias, granted)| {
                                        let a = alias.clone();
                                        view! {
                                            <tr data-db=alias.clone()>
                                                <td><code>{alias.clone()}</code></td>
                                                <td>{if granted {
                                                    view! { <span class="badge processed">"granted"</span> }.into_any()
                                                } else {
                                                    view! { <span class="badge cancelled">"not granted"</span> }.into_any()
                                                }}</td>
                                                <td class="actions">
                                                    <button disabled=move || set.pending().get() on:click=move |_| {
                                                        set.dispatch(SetDatabaseGrant {
                                                            project: project.get_untracked(), alias: a.clone(), granted: !granted,
                                                        });
                                                    }>{if granted { "Revoke" } else { "Grant" }}</button>
                                                </td>
                                            </tr>
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

#[component]
fn ApiKeys() -> impl IntoView {
    let project = use_project();
    let create = ServerAction::<CreateApiKey>::new();
    let revoke = ServerAction::<RevokeApiKey>::new();
    let keys = Resource::new(
        move || (project.get(), create.version().get(), revoke.version().get()),
        |(p, _, _)| list_api_keys(p),
    );
    let (name, set_name) = signal(String::new());
    let (role, set_role) = signal(String::from("queue"));
    let confirm = RwSignal::new(None::<String>);
    // The new key, shown until dismissed: the only time anyone sees it.
    let shown = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        if let Some(Ok(key)) = create.value().get() {
            shown.set(Some(key));
            set_name.set(String::new());
        }
    });
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        create.dispatch(CreateApiKey { project: project.get_untracked(), name: name.get_untracked(), role: role.get_untracked() });
    };
    view! {
        <section class="panel">
            <h2>"API keys"</h2>
            <form class="inline-form" on:submit=submit aria-label="New API key">
                <label>"Key name"
                    <input name="name" placeholder="billing service" prop:value=name
                        on:input=move |ev| set_name.set(event_target_value(&ev))/>
                </label>
                <label>"Role"
                    <select name="role" prop:value=role on:change=move |ev| set_role.set(event_target_value(&ev))>
                        <option value="queue">"queue: queue events only"</option>
                        <option value="admin">"admin: everything in this project"</option>
                    </select>
                </label>
                <button class="primary" type="submit" disabled=move || create.pending().get()>
                    {move || if create.pending().get() { "Creating…" } else { "Create key" }}
                </button>
            </form>
            {move || create.value().get().and_then(Result::err).map(|e| view! { <p class="error" role="alert">{e.to_string()}</p> })}
            {move || shown.get().map(|key| view! {
                <div class="secret-once" role="status">
                    <p>"Copy this key now. Herald keeps only its hash and will not show it again."</p>
                    <code class="new-key">{key}</code>
                    <button class="link" on:click=move |_| shown.set(None)>"Done"</button>
                </div>
            })}
            {move || revoke.value().get().and_then(Result::err).map(|e| view! { <p class="error" role="alert">{e.to_string()}</p> })}
            <Transition fallback=|| view! { <p class="busy">"Loading keys…"</p> }>
                {move || Suspend::new(async move {
                    match keys.await {
                        Err(e) => view! { <div class="notice" role="alert">{e.to_string()}</div> }.into_any(),
                        Ok(list) if list.is_empty() => view! { <p class="muted">"No API keys yet."</p> }.into_any(),
                        Ok(list) => view! {
                            <table class="table keys">
                                <thead><tr>
                                    <th>"Name"</th><th>"Role"</th><th>"Key"</th><th>"Created"</th><th>"Last used"</th><th>"Actions"</th>
                                </tr></thead>
                                <tbody>
                                    {list.into_iter().map(|k| {
                                        let id = k.id.to_string();
                                        let (id1, id2) = (id.clone(), id.clone());
                                        let revoked = k.revoked_at.is_some();
                                        view! {
                                            <tr data-key=k.name.clone() class:revoked=revoked>
                                                <td>{k.name.clone()}</td>
                                                <td>{k.role.clone()}</td>
                                                <td><code>{format!("{}…", k.prefix)}</code></td>
                                                <td>{utc(k.created_at)}</td>
                                                <td>{k.last_used_at.map(utc).unwrap_or_else(|| "never".into())}</td>
                                                <td class="actions">
                                                    {move || if revoked {
                                                        view! { <span class="badge failed">"revoked"</span> }.into_any()
                                                    } else if confirm.get().as_deref() == Some(id1.as_str()) {
                                                        let id = id2.clone();
                                                        view! {
                                                            <button class="danger" on:click=move |_| {
                                                                confirm.set(None);
                                                                revoke.dispatch(RevokeApiKey { project: project.get_untracked(), id: id.clone() });
                                                            }>"Confirm revoke"</button>
                                                            <button class="link" on:click=move |_| confirm.set(None)>"Keep"</button>
                                                        }.into_any()
                                                    } else {
                                                        let id = id2.clone();
                                                        view! { <button on:click=move |_| confirm.set(Some(id.clone()))>"Revoke"</button> }.into_any()
                                                    }}
                                                </td>
                                            </tr>
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

/// The JWT secret and the signing secret: revealed on request, rotated after a
/// confirmation that says what breaks.
#[component]
fn Secrets() -> impl IntoView {
    let project = use_project();
    let reveal = ServerAction::<ProjectSecrets>::new();
    let rotate = ServerAction::<RotateSecret>::new();
    let confirm = RwSignal::new(None::<&'static str>);
    // A rotation changes what "Reveal" would show: reveal again.
    Effect::new(move |_| {
        if let Some(Ok(_)) = rotate.value().get() {
            if reveal.value().get_untracked().is_some() {
                reveal.dispatch(ProjectSecrets { project: project.get_untracked() });
            }
        }
    });
    let row = move |kind: &'static str, label: &'static str, what_breaks: &'static str| {
        let value = move || {
            reveal.value().get().and_then(Result::ok).map(|(jwt, signing)| if kind == "jwt" { jwt } else { signing })
        };
        view! {
            <div class="secret" data-secret=kind>
                <h3>{label}</h3>
                <code class="secret-value">{move || value().unwrap_or_else(|| "••••••••••••••••".into())}</code>
                {move || if confirm.get() == Some(kind) {
                    view! {
                        <div class="confirm" role="alertdialog" aria-label=format!("Rotate the {label}")>
                            <p>{what_breaks}</p>
                            <button class="danger" disabled=move || rotate.pending().get() on:click=move |_| {
                                confirm.set(None);
                                rotate.dispatch(RotateSecret { project: project.get_untracked(), kind: kind.into() });
                            }>"Rotate now"</button>
                            <button class="link" on:click=move |_| confirm.set(None)>"Cancel"</button>
                        </div>
                    }.into_any()
                } else {
                    view! { <button on:click=move |_| confirm.set(Some(kind))>{format!("Rotate {label}")}</button> }.into_any()
                }}
            </div>
        }
    };
    view! {
        <section class="panel">
            <h2>"Secrets"</h2>
            <p>
                <button disabled=move || reveal.pending().get()
                    on:click=move |_| { reveal.dispatch(ProjectSecrets { project: project.get_untracked() }); }>
                    {move || if reveal.pending().get() { "Revealing…" } else { "Reveal secrets" }}
                </button>
            </p>
            {move || reveal.value().get().and_then(Result::err).map(|e| view! { <p class="error" role="alert">{e.to_string()}</p> })}
            {move || rotate.value().get().map(|r| match r {
                Ok(_) => view! { <p class="ok" role="status">"Rotated. The new secret is in use from now on."</p> }.into_any(),
                Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
            })}
            {row("jwt", "JWT secret",
                "JWTs signed with the current secret stop working at once, and receivers that check X-SC-Token need the new one.")}
            {row("signing", "signing secret",
                "Receivers that verify webhook-signature need the new secret; deliveries from now on are signed with it.")}
        </section>
    }
}

/// The signed-in user's account: change password.
#[component]
pub fn Account() -> impl IntoView {
    let change = ServerAction::<ChangePassword>::new();
    let (current, set_current) = signal(String::new());
    let (new, set_new) = signal(String::new());
    let (repeat, set_repeat) = signal(String::new());
    let error = move || change.value().get().and_then(Result::err);
    let error_for = move |field: &'static str| {
        move || error().filter(|e| e.field() == Some(field)).map(|e| view! { <span class="field-error" role="alert">{e.to_string()}</span> })
    };
    Effect::new(move |_| {
        if let Some(Ok(())) = change.value().get() {
            set_current.set(String::new());
            set_new.set(String::new());
            set_repeat.set(String::new());
        }
    });
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        change.dispatch(ChangePassword { current: current.get_untracked(), new: new.get_untracked(), repeat: repeat.get_untracked() });
    };
    view! {
        <div class="page-head"><h1>"Account"</h1></div>
        <section class="panel">
            <h2>"Change password"</h2>
            <form class="stack-form" on:submit=submit aria-label="Change password">
                <label>"Current password"
                    <input type="password" name="current" autocomplete="current-password" prop:value=current
                        on:input=move |ev| set_current.set(event_target_value(&ev))/>
                    {error_for("current")}
                </label>
                <label>"New password"
                    <input type="password" name="new" autocomplete="new-password" placeholder="at least 8 characters"
                        prop:value=new on:input=move |ev| set_new.set(event_target_value(&ev))/>
                    {error_for("new")}
                </label>
                <label>"Repeat new password"
                    <input type="password" name="repeat" autocomplete="new-password" prop:value=repeat
                        on:input=move |ev| set_repeat.set(event_target_value(&ev))/>
                    {error_for("repeat")}
                </label>
                {move || error().filter(|e| e.field().is_none()).map(|e| view! { <p class="error" role="alert">{e.to_string()}</p> })}
                {move || matches!(change.value().get(), Some(Ok(()))).then(|| view! {
                    <p class="ok" role="status">"Password changed."</p>
                })}
                <div class="buttons">
                    <button class="primary" type="submit" disabled=move || change.pending().get()>
                        {move || if change.pending().get() { "Saving…" } else { "Change password" }}
                    </button>
                </div>
            </form>
        </section>
    }
}
