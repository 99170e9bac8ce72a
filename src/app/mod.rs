//! Mission Control: the shell, the router and the layout.

mod modal;
mod pages;

pub use modal::Modal;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::components::{Redirect, Route, Router, Routes, A};
use leptos_router::hooks::{use_location, use_navigate, use_params_map};
use leptos_router::{ParamSegment, StaticSegment};

use crate::api::ui::{list_projects, whoami, CreateProject, Logout};

/// The HTML document the server renders around the app.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    #[cfg(feature = "ssr")]
    crate::server::page_security_headers();
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Effects run only in the browser: this marks the page as hydrated, so that
    // tests (and impatient people) know the buttons work.
    Effect::new(|_| {
        if let Some(root) = document().document_element() {
            let _ = root.set_attribute("data-hydrated", "true");
        }
    });
    view! {
        <Stylesheet id="herald" href="/pkg/herald.css"/>
        <Title text="Herald · Mission Control"/>
        <Router>
            <Routes fallback=|| view! { <NotFound/> }>
                <Route path=StaticSegment("login") view=pages::login::Login/>
                <Route path=StaticSegment("") view=|| view! { <Redirect path="/p/default/triggers"/> }/>
                <Route
                    path=(StaticSegment("p"), ParamSegment("project"), StaticSegment("triggers"))
                    view=|| view! { <Layout><pages::triggers::EventTriggers/></Layout> }
                />
                <Route
                    path=(StaticSegment("p"), ParamSegment("project"), StaticSegment("logs"))
                    view=|| view! { <Layout><pages::logs::EventLogs/></Layout> }
                />
                <Route
                    path=(StaticSegment("p"), ParamSegment("project"), StaticSegment("logs"), ParamSegment("id"))
                    view=|| view! { <Layout><pages::logs::LogDetailPage/></Layout> }
                />
                <Route
                    path=(StaticSegment("p"), ParamSegment("project"), StaticSegment("dead-letters"))
                    view=|| view! { <Layout><pages::deadletters::DeadLetters/></Layout> }
                />
                <Route
                    path=(StaticSegment("p"), ParamSegment("project"), StaticSegment("settings"))
                    view=|| view! { <Layout><pages::settings::ProjectSettings/></Layout> }
                />
                <Route
                    path=(StaticSegment("p"), ParamSegment("project"), StaticSegment("account"))
                    view=|| view! { <Layout><pages::settings::Account/></Layout> }
                />
            </Routes>
        </Router>
    }
}

/// The current project, from the URL.
pub fn use_project() -> Memo<String> {
    let params = use_params_map();
    Memo::new(move |_| params.read().get("project").unwrap_or_else(|| "default".into()))
}

/// Header, navigation and footer around a page that needs a session: signed-out
/// visitors are sent to the sign-in page.
#[component]
fn Layout(children: ChildrenFn) -> impl IntoView {
    let user = Resource::new(|| (), |_| whoami());
    let children = StoredValue::new(children);
    view! {
        <Suspense fallback=|| view! { <p class="busy">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match user.await {
                    Ok(Some(name)) => view! {
                        <Header user=name/>
                        <main class="content">{children.read_value()()}</main>
                        <footer class="footer">"Herald " {env!("CARGO_PKG_VERSION")}</footer>
                    }.into_any(),
                    _ => view! { <Redirect path="/login"/> }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// The header: product name, navigation and the user. On narrow screens the
/// navigation folds behind a Menu button.
#[component]
fn Header(user: String) -> impl IntoView {
    let (open, set_open) = signal(false);
    let project = use_project();
    let logout = ServerAction::<Logout>::new();
    Effect::new(move |_| {
        if logout.value().get().is_some() {
            #[cfg(feature = "hydrate")]
            let _ = window().location().set_href("/login");
        }
    });
    view! {
        <header class="header">
            <a class="brand" href="/">"Herald"<span class="brand-sub">" Mission Control"</span></a>
            <button
                class="menu-toggle"
                aria-controls="main-nav"
                aria-expanded=move || if open.get() { "true" } else { "false" }
                on:click=move |_| set_open.update(|o| *o = !*o)
            >
                "Menu"
            </button>
            <nav id="main-nav" class="nav" class:open=open>
                <A href=move || format!("/p/{}/triggers", project.get())>"Event Triggers"</A>
                <A href=move || format!("/p/{}/logs", project.get())>"Event Logs"</A>
                <A href=move || format!("/p/{}/dead-letters", project.get())>"Dead Letters"</A>
                <A href=move || format!("/p/{}/settings", project.get())>"Settings"</A>
                <ProjectSwitcher/>
                <A href=move || format!("/p/{}/account", project.get()) attr:class="user" attr:title="Account: change password">{user}</A>
                <button class="link" on:click=move |_| { logout.dispatch(Logout {}); }>"Sign out"</button>
            </nav>
        </header>
    }
}

/// The project picker in the header. Switching keeps the current section;
/// "New project…" opens a small form and lands on the new project's settings.
#[component]
fn ProjectSwitcher() -> impl IntoView {
    let project = use_project();
    let location = use_location();
    let navigate = StoredValue::new(use_navigate());
    let create = ServerAction::<CreateProject>::new();
    let projects = Resource::new(move || create.version().get(), |_| list_projects());
    let creating = RwSignal::new(false);
    let (new_id, set_new_id) = signal(String::new());
    let go = move |to: String| {
        // The section after /p/{project}/, e.g. "logs"; a detail page goes to its list.
        let path = location.pathname.get_untracked();
        let section = path.split('/').nth(3).filter(|s| !s.is_empty()).unwrap_or("triggers").to_string();
        navigate.with_value(|n| n(&format!("/p/{to}/{section}"), Default::default()));
    };
    Effect::new(move |_| {
        if let Some(Ok(id)) = create.value().get() {
            creating.set(false);
            set_new_id.set(String::new());
            navigate.with_value(|n| n(&format!("/p/{id}/settings"), Default::default()));
        }
    });
    view! {
        <label class="project">"Project"
            <Transition fallback=move || view! { <strong>{project.get()}</strong> }>
                {move || Suspend::new(async move {
                    let list = projects.await.unwrap_or_default();
                    view! {
                        <select aria-label="Project" on:change=move |ev| {
                            let v = event_target_value(&ev);
                            if v == NEW_PROJECT { creating.set(true) } else { go(v) }
                        }>
                            {list.into_iter().map(|p| {
                                let selected = p == project.get_untracked();
                                view! { <option value=p.clone() selected=selected>{p.clone()}</option> }
                            }).collect_view()}
                            <option value=NEW_PROJECT>"New project…"</option>
                        </select>
                    }
                })}
            </Transition>
        </label>
        {move || creating.get().then(|| {
            let cancel = move || {
                creating.set(false);
                // Put the select back on the current project.
                projects.refetch();
            };
            view! {
                <Modal title="New project" id="new-project-title" narrow=true on_close=cancel>
                    <form aria-label="New project" on:submit=move |ev: leptos::ev::SubmitEvent| {
                        ev.prevent_default();
                        create.dispatch(CreateProject { id: new_id.get_untracked() });
                    }>
                        <label>"Project id"
                            <input name="id" placeholder="my-app" prop:value=new_id
                                on:input=move |ev| set_new_id.set(event_target_value(&ev))/>
                            <small class="muted">"Lowercase letters, digits, '_' and '-'. It appears in every URL and cannot change."</small>
                            {move || create.value().get().and_then(Result::err).map(|e| view! {
                                <span class="field-error" role="alert">{e.to_string()}</span>
                            })}
                        </label>
                        <div class="buttons">
                            <button type="button" on:click=move |_| cancel()>"Cancel"</button>
                            <button class="primary" type="submit" disabled=move || create.pending().get()>
                                {move || if create.pending().get() { "Creating…" } else { "Create project" }}
                            </button>
                        </div>
                    </form>
                </Modal>
            }
        })}
    }
}

const NEW_PROJECT: &str = "__new";

#[component]
fn NotFound() -> impl IntoView {
    view! {
        <main class="content">
            <h1>"Page not found"</h1>
            <p><a href="/">"Back to Event Triggers"</a></p>
        </main>
    }
}
