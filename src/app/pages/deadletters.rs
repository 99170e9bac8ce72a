//! Dead letters (SPEC §9): failed event logs grouped by trigger and last error,
//! each group, or everything in a time range, replayed in bulk.

use leptos::prelude::*;

use crate::api::ui::{dead_letters, ReplayDeadLetters, ReplayDeadLettersInWindow};
use crate::app::use_project;

#[component]
pub fn DeadLetters() -> impl IntoView {
    let project = use_project();
    let replay = ServerAction::<ReplayDeadLetters>::new();
    let replay_window = ServerAction::<ReplayDeadLettersInWindow>::new();
    // The window: times typed as RFC 3339, or a date and time taken as UTC; empty is open.
    let (from, set_from) = signal(String::new());
    let (to, set_to) = signal(String::new());
    let groups = Resource::new(
        move || (project.get(), from.get(), to.get(), replay.version().get(), replay_window.version().get()),
        |(p, from, to, _, _)| dead_letters(p, from, to),
    );
    let outcome = move |r: Result<u64, crate::api::ui::AppError>| match r {
        Ok(n) => view! { <p class="ok" role="status">{format!("Replayed {n} event logs.")}</p> }.into_any(),
        Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
    };
    let busy = move || replay.pending().get() || replay_window.pending().get();
    view! {
        <div class="page-head"><h1>"Dead letters"</h1></div>
        <p class="muted">"Event logs whose attempts ran out, grouped by trigger and last error. \
            Replay a group, or everything in a time range, once its receiver is fixed: each event log gets a fresh set of attempts."</p>
        <form class="filters" aria-label="Time range" on:submit=|ev| ev.prevent_default()>
            <label>"From (UTC)"
                <input name="from" placeholder="2026-01-31 12:00" prop:value=from
                    on:change=move |ev| set_from.set(event_target_value(&ev).trim().to_string())/>
            </label>
            <label>"To (UTC)"
                <input name="to" placeholder="2026-02-01 12:00" prop:value=to
                    on:change=move |ev| set_to.set(event_target_value(&ev).trim().to_string())/>
            </label>
            // Without a range it would replay every dead letter of the project at
            // once: each group's own Replay does that, one group at a time.
            <button type="button" disabled=move || busy() || (from.get().is_empty() && to.get().is_empty())
                title="Set From or To first" on:click=move |_| {
                replay_window.dispatch(ReplayDeadLettersInWindow {
                    project: project.get_untracked(), from: from.get_untracked(), to: to.get_untracked(),
                });
            }>"Replay all in this range"</button>
        </form>
        {move || replay.value().get().map(outcome)}
        {move || replay_window.value().get().map(outcome)}
        <Transition fallback=|| view! { <p class="busy">"Loading dead letters…"</p> }>
            {move || Suspend::new(async move {
                match groups.await {
                    Err(e) => view! { <div class="notice" role="alert">{e.to_string()}</div> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p class="empty">"No dead letters: every failed delivery has been replayed, or none failed."</p> }.into_any(),
                    Ok(list) => view! {
                        <div class="table-scroll" role="region" aria-label="Dead letters" tabindex="0"><table class="table dead-letters">
                            <thead><tr>
                                <th>"Trigger"</th><th>"Last error"</th><th>"Event logs"</th><th>"Oldest"</th><th>"Newest"</th><th>"Actions"</th>
                            </tr></thead>
                            <tbody>
                                {list.into_iter().map(|g| {
                                    let (trigger, error) = (g.trigger.clone(), g.error.clone());
                                    let label = format!("Replay {} event logs of {}", g.count, g.trigger);
                                    view! {
                                        <tr data-trigger=g.trigger.clone()>
                                            <td>{g.trigger.clone()}</td>
                                            <td><code>{if g.error.is_empty() { "(none)".to_string() } else { g.error.clone() }}</code></td>
                                            <td>{g.count}</td>
                                            <td>{g.oldest.format("%Y-%m-%d %H:%M UTC").to_string()}</td>
                                            <td>{g.newest.format("%Y-%m-%d %H:%M UTC").to_string()}</td>
                                            <td class="actions">
                                                <button aria-label=label disabled=busy on:click=move |_| {
                                                    replay.dispatch(ReplayDeadLetters {
                                                        project: project.get_untracked(), trigger: trigger.clone(), error: error.clone(),
                                                        from: from.get_untracked(), to: to.get_untracked(),
                                                    });
                                                }>"Replay"</button>
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
    }
}
