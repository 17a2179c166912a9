//! Steps that compose with `|` into chains.

use crate::error::Result;
use std::future::Future;

/// One step of a chain: takes an input, gives an output or an [`Error`](crate::Error).
///
/// Steps compose with `|`: `a | b` is a step that runs `a`, then `b` on its
/// output. `invoke` accepts anything that converts into the input, so a chain
/// that starts with a model can be invoked with a `&str`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a chain step",
    note = "wrap an async closure with `toolgate::runnable_fn`, or implement `toolgate::Runnable`"
)]
pub trait Runnable: Send + Sync {
    /// What the step takes.
    type Input: Send;
    /// What the step gives.
    type Output: Send;

    /// Runs the step.
    fn invoke(
        &self,
        input: impl Into<Self::Input> + Send,
    ) -> impl Future<Output = Result<Self::Output>> + Send;

    /// `self | next`, for steps of types that do not implement `|`.
    fn pipe<B>(self, next: B) -> Pipe<Self, B>
    where
        Self: Sized,
        B: Runnable<Input = Self::Output>,
    {
        Pipe {
            first: self,
            second: next,
        }
    }
}

/// Two steps run one after the other; made with `|` or [`Runnable::pipe`].
#[derive(Debug, Clone)]
pub struct Pipe<A, B> {
    first: A,
    second: B,
}

impl<A, B> Runnable for Pipe<A, B>
where
    A: Runnable,
    B: Runnable<Input = A::Output>,
{
    type Input = A::Input;
    type Output = B::Output;

    async fn invoke(&self, input: impl Into<A::Input> + Send) -> Result<B::Output> {
        let middle = self.first.invoke(input).await?;
        self.second.invoke(middle).await
    }
}

/// A step made from an async function; see [`runnable_fn`].
#[derive(Debug, Clone)]
pub struct RunnableFn<F, I> {
    function: F,
    _input: std::marker::PhantomData<fn(I)>,
}

/// Turns an async function into a chain step.
pub fn runnable_fn<F, I, O, Fut>(function: F) -> RunnableFn<F, I>
where
    F: Fn(I) -> Fut + Send + Sync,
    Fut: Future<Output = Result<O>> + Send,
    I: Send,
    O: Send,
{
    RunnableFn {
        function,
        _input: std::marker::PhantomData,
    }
}

impl<F, I, O, Fut> Runnable for RunnableFn<F, I>
where
    F: Fn(I) -> Fut + Send + Sync,
    Fut: Future<Output = Result<O>> + Send,
    I: Send,
    O: Send,
{
    type Input = I;
    type Output = O;

    async fn invoke(&self, input: impl Into<I> + Send) -> Result<O> {
        (self.function)(input.into()).await
    }
}

/// Implements `|` for a step type, so it can start or continue a chain.
///
/// Rust's orphan rule keeps `|` from being implemented for every
/// [`Runnable`] at once; step types call this once instead.
#[macro_export]
macro_rules! impl_pipe_operator {
    ([$($generics:ident),*] $ty:ty) => {
        impl<$($generics,)* __Next> ::core::ops::BitOr<__Next> for $ty
        where
            Self: $crate::Runnable,
            __Next: $crate::Runnable<Input = <Self as $crate::Runnable>::Output>,
        {
            type Output = $crate::Pipe<Self, __Next>;

            fn bitor(self, next: __Next) -> Self::Output {
                $crate::Runnable::pipe(self, next)
            }
        }
    };
    ($ty:ty) => {
        $crate::impl_pipe_operator!([] $ty);
    };
}

impl_pipe_operator!([A, B] Pipe<A, B>);
impl_pipe_operator!([F, I] RunnableFn<F, I>);
impl_pipe_operator!([M] crate::model::BoundModel<M>);
impl_pipe_operator!(crate::chain::CallTools);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn block_on<F: Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn steps_compose_left_to_right() {
        let double = runnable_fn(|x: i64| async move { Ok(x * 2) });
        let describe = runnable_fn(|x: i64| async move { Ok(format!("got {x}")) });
        let add_one = runnable_fn(|x: i64| async move { Ok(x + 1) });
        let chain = double | add_one | describe;
        assert_eq!(block_on(chain.invoke(5)).unwrap(), "got 11");
    }

    #[test]
    fn an_error_stops_the_chain() {
        let ran = std::sync::atomic::AtomicBool::new(false);
        let fail = runnable_fn(|_: i64| async move { Err::<i64, _>(Error::other("no")) });
        let after = runnable_fn(|x: i64| {
            ran.store(true, std::sync::atomic::Ordering::SeqCst);
            async move { Ok(x) }
        });
        let error = block_on((fail | after).invoke(1)).unwrap_err();
        assert_eq!(error.to_string(), "no");
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
