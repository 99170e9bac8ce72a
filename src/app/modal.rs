//! Modal dialogs, after the WAI-ARIA dialog pattern, on the native `<dialog>`:
//! `showModal()` makes the rest of the page inert (focus cannot leave, screen
//! readers see only the dialog) and moves focus to its first field; Escape and
//! the dialog's own Close or Cancel button close it; focus then goes back to the
//! button that opened it.

use leptos::prelude::*;

/// A modal dialog named by its heading. `on_close` runs on Escape; the caller
/// removes the dialog (usually by clearing the signal that shows it).
#[component]
pub fn Modal(
    /// The heading, which is also the dialog's accessible name.
    #[prop(into)]
    title: Signal<String>,
    /// The heading's element id (one modal is open at a time).
    id: &'static str,
    on_close: impl Fn() + Send + Sync + 'static,
    #[prop(optional)] narrow: bool,
    children: Children,
) -> impl IntoView {
    let node = NodeRef::<leptos::html::Dialog>::new();
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        // What had focus when the dialog was created: the button that opened it.
        let opener = send_wrapper::SendWrapper::new(document().active_element());
        Effect::new(move |_| {
            if let Some(dialog) = node.get() {
                if !dialog.open() {
                    let _ = dialog.show_modal();
                }
            }
        });
        on_cleanup(move || {
            // After the dialog has left the page: until then the rest is inert.
            set_timeout(
                move || {
                    if let Some(el) = opener.take().and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok()) {
                        if el.is_connected() {
                            let _ = el.focus();
                        }
                    }
                },
                std::time::Duration::ZERO,
            );
        });
    }
    // Tab and Shift+Tab wrap around inside the dialog: the browser's own modal
    // dialog lets focus leave for the address bar and the page behind.
    let keep_focus = move |ev: leptos::ev::KeyboardEvent| {
        #[cfg(feature = "hydrate")]
        wrap_tab(&ev, node);
        #[cfg(not(feature = "hydrate"))]
        let _ = (ev, node);
    };
    view! {
        <dialog node_ref=node class="dialog" class:narrow=narrow aria-labelledby=id on:keydown=keep_focus
            on:cancel=move |ev: leptos::ev::Event| {
                // Escape: the caller decides (it removes the dialog).
                ev.prevent_default();
                on_close();
            }>
            <h2 id=id>{title}</h2>
            {children()}
        </dialog>
    }
}

/// What Tab can reach inside a dialog.
#[cfg(feature = "hydrate")]
const FOCUSABLE: &str = "a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), \
    textarea:not([disabled]), summary, [tabindex]:not([tabindex='-1'])";

#[cfg(feature = "hydrate")]
fn wrap_tab(ev: &web_sys::KeyboardEvent, node: NodeRef<leptos::html::Dialog>) {
    use wasm_bindgen::JsCast;
    if ev.key() != "Tab" {
        return;
    }
    let Some(dialog) = node.get_untracked() else { return };
    let Ok(list) = dialog.query_selector_all(FOCUSABLE) else { return };
    // Only what is shown: the fields of a closed <details> have no boxes.
    let items: Vec<web_sys::HtmlElement> = (0..list.length())
        .filter_map(|i| list.item(i))
        .filter_map(|n| n.dyn_into::<web_sys::HtmlElement>().ok())
        .filter(|e| e.get_client_rects().length() > 0)
        .collect();
    let (Some(first), Some(last)) = (items.first(), items.last()) else { return };
    let active = document().active_element();
    let is = |e: &web_sys::HtmlElement| active.as_ref().is_some_and(|a| a == e.unchecked_ref::<web_sys::Element>());
    let inside = active.as_ref().is_some_and(|a| dialog.contains(Some(a)));
    let to = if ev.shift_key() && (is(first) || !inside) {
        last
    } else if !ev.shift_key() && (is(last) || !inside) {
        first
    } else {
        return;
    };
    ev.prevent_default();
    let _ = to.focus();
}
