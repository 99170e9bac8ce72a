//! Mission Control: the shell, the router and the layout.

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::components::{Route, Router, Routes, A};
use leptos_router::StaticSegment;

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
    view! {
        <Stylesheet id="herald" href="/pkg/herald.css"/>
        <Title text="Herald · Mission Control"/>
        <Router>
            <Header/>
            <main class="content">
                <Routes fallback=|| view! { <NotFound/> }>
                    <Route path=StaticSegment("") view=EventTriggers/>
                    <Route path=StaticSegment("triggers") view=EventTriggers/>
                    <Route path=StaticSegment("logs") view=EventLogs/>
                </Routes>
            </main>
            <footer class="footer">"Herald " {env!("CARGO_PKG_VERSION")}</footer>
        </Router>
    }
}

/// The header: product name and navigation. On narrow screens the navigation
/// folds behind a Menu button.
#[component]
fn Header() -> impl IntoView {
    let (open, set_open) = signal(false);
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
                <A href="/triggers">"Event Triggers"</A>
                <A href="/logs">"Event Logs"</A>
            </nav>
        </header>
    }
}

#[component]
fn EventTriggers() -> impl IntoView {
    view! {
        <h1>"Event Triggers"</h1>
        <p class="empty">
            "An event trigger delivers every event of one type to a webhook URL, with retries. "
            "Until this page can manage them, use the API: see the README."
        </p>
    }
}

#[component]
fn EventLogs() -> impl IntoView {
    view! {
        <h1>"Event Logs"</h1>
        <p class="empty">"The delivery history will appear here."</p>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    view! {
        <h1>"Page not found"</h1>
        <p><a href="/">"Back to Event Triggers"</a></p>
    }
}
