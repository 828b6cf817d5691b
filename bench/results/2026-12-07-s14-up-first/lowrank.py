import numpy as np, sys
N_FF=1536
def load(p):
    d=np.fromfile(p,dtype=np.float32).reshape(-1,2,N_FF)
    return d[:,0,:].astype(np.float64), d[:,1,:].astype(np.float64)
def err(h, skip):
    return (np.where(skip,h,0)**2).sum()/(h**2).sum()
def cascade(score, h, s1, s2):
    n=h.shape[1]; k1=int(s1*n); k2=int(s2*n)
    o=np.argsort(score,axis=1)
    skip=np.zeros_like(h,dtype=bool)
    rows=np.arange(h.shape[0])[:,None]
    skip[rows,o[:,:k1]]=True
    # stage 2: smallest |h| among the rest
    hh=np.where(skip,np.inf,np.abs(h))
    o2=np.argsort(hh,axis=1)
    skip[rows,o2[:,:k2-k1]]=True
    return err(h,skip)
for L in sys.argv[1:]:
    Ac,Uc=load(f'/tmp/s14/exp/cal-L{L}.f32'); At,Ut=load(f'/tmp/s14/exp/gpl-L{L}.f32')
    Ac,Uc,At,Ut=Ac[1:],Uc[1:],At[1:],Ut[1:]  # drop BOS of first chunk
    ht=At*Ut
    mu=np.abs(Uc).mean(0)
    C=Uc.T@Uc/len(Uc)
    w,V=np.linalg.eigh(C); V=V[:,::-1]; w=w[::-1]
    tot=(Ut**2).sum()
    line=f'L{L}: '
    res={}
    for r in [8,16,32,64,128]:
        P=V[:,:r]
        uh_c=Uc@P@P.T; sig=np.sqrt(((Uc-uh_c)**2).mean(0))
        uh=Ut@P@P.T
        ev=1-((Ut-uh)**2).sum()/tot
        res[r]=(uh,sig,ev)
        line+=f'r{r} EV={ev:.2f} '
    print(line)
    for s1 in [0.2,0.3,0.4]:
        s2=0.45
        out=[f'upw {cascade(np.abs(At)*mu,ht,s1,s2):.4f}', f'oracle {cascade(np.abs(ht),ht,s1,s2):.4f}']
        for r,(uh,sig,ev) in res.items():
            out.append(f'r{r} {cascade(np.abs(At)*np.sqrt(uh**2+sig**2),ht,s1,s2):.4f}')
        print(f'  s1={s1}: '+'  '.join(out))
