//! The sign-in page.

use leptos::prelude::*;

use crate::api::ui::Login as LoginFn;

#[component]
pub fn Login() -> impl IntoView {
    let login = ServerAction::<LoginFn>::new();
    let (user, set_user) = signal(String::from("admin"));
    let (password, set_password) = signal(String::new());
    Effect::new(move |_| {
        if let Some(Ok(())) = login.value().get() {
            #[cfg(feature = "hydrate")]
            let _ = window().location().set_href("/p/default/triggers");
        }
    });
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        login.dispatch(LoginFn { user: user.get(), password: password.get() });
    };
    view! {
        <main class="login">
            <form class="card" on:submit=submit>
                <h1>"Herald"</h1>
                <p class="muted">"Sign in to Mission Control"</p>
                <label>"User name"
                    <input name="user" autocomplete="username" prop:value=user
                        on:input=move |ev| set_user.set(event_target_value(&ev))/>
                </label>
                <label>"Password"
                    <input name="password" type="password" autocomplete="current-password" prop:value=password
                        on:input=move |ev| set_password.set(event_target_value(&ev))/>
                </label>
                {move || login.value().get().and_then(Result::err).map(|e| view! {
                    <p class="error" role="alert">{e.to_string()}</p>
                })}
                <button class="primary" type="submit" disabled=move || login.pending().get()>
                    {move || if login.pending().get() { "Signing in…" } else { "Sign in" }}
                </button>
            </form>
        </main>
    }
}
