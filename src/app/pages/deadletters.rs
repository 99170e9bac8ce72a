//! Dead letters (SPEC §9): failed event logs grouped by trigger and last error,
//! each group replayed in bulk.

use leptos::prelude::*;

use crate::api::ui::{dead_letters, ReplayDeadLetters};
use crate::app::use_project;

#[component]
pub fn DeadLetters() -> impl IntoView {
    let project = use_project();
    let replay = ServerAction::<ReplayDeadLetters>::new();
    let groups = Resource::new(move || (project.get(), replay.version().get()), |(p, _)| dead_letters(p));
    view! {
        <div class="page-head"><h1>"Dead letters"</h1></div>
        <p class="muted">"Event logs whose attempts ran out, grouped by trigger and last error. \
            Replay a group once its receiver is fixed: each event log gets a fresh set of attempts."</p>
        {move || replay.value().get().map(|r| match r {
            Ok(n) => view! { <p class="ok" role="status">{format!("Replayed {n} event logs.")}</p> }.into_any(),
            Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
        })}
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
                                                <button aria-label=label disabled=move || replay.pending().get() on:click=move |_| {
                                                    replay.dispatch(ReplayDeadLetters {
                                                        project: project.get_untracked(), trigger: trigger.clone(), error: error.clone(),
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
