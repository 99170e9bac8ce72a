//! Mission Control: the shell, the router and the layout.

mod pages;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::components::{Redirect, Route, Router, Routes, A};
use leptos_router::hooks::use_params_map;
use leptos_router::{ParamSegment, StaticSegment};

use crate::api::ui::{whoami, Logout};

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
                <span class="project">"Project: " <strong>{move || project.get()}</strong></span>
                <span class="user">{user}</span>
                <button class="link" on:click=move |_| { logout.dispatch(Logout {}); }>"Sign out"</button>
            </nav>
        </header>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    view! {
        <main class="content">
            <h1>"Page not found"</h1>
            <p><a href="/">"Back to Event Triggers"</a></p>
        </main>
    }
}
