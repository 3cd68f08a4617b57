import streamlit as st

st.title("Inspect")
st.info("This page is not built yet.", icon=":material/construction:")
